//! Prints the PhoneNumber CRD as YAML (`make crds` writes it to crds/).

use kube::CustomResourceExt;
use oneinbox_operator::crd::PhoneNumber;

fn main() -> Result<(), yaml_serde::Error> {
    print!("{}", yaml_serde::to_string(&PhoneNumber::crd())?);
    Ok(())
}

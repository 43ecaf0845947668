//! Prints the PhoneNumber CRD as YAML (`make crds` writes it to crds/).

use kube::CustomResourceExt;
use oneinbox_operator::crd::PhoneNumber;

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", serde_yaml::to_string(&PhoneNumber::crd())?);
    Ok(())
}

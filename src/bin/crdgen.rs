//! Prints the PhoneNumber CRD as YAML (`make crds` writes it to crds/), with its descriptions
//! reflowed for `kubectl explain` (see `crd::generated_crd`).

use oneinbox_operator::crd::generated_crd;

fn main() -> Result<(), yaml_serde::Error> {
    print!("{}", yaml_serde::to_string(&generated_crd())?);
    Ok(())
}

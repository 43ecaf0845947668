//! Prints the PhoneNumber CRD as YAML (`make crds` writes it to crds/), with its descriptions
//! reflowed for `kubectl explain` (see `crd::generated_crd`).

use oneinbox_operator::crd::generated_crd;

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", serde_yaml::to_string(&generated_crd())?);
    Ok(())
}

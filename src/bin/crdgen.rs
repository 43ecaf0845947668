//! Prints a CRD as YAML (`make crds` writes each to crds/), with its descriptions reflowed for
//! `kubectl explain` (see `crd::generated_crds`): `crdgen` prints the PhoneNumber CRD,
//! `crdgen <plural>` the one of that plural (`oneinboxaccounts`, `clusteroneinboxaccounts`).

use oneinbox_operator::crd::generated_crds;

fn main() -> Result<(), String> {
    let plural = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "phonenumbers".into());
    let crd = generated_crds()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .ok_or_else(|| format!("no CRD with plural {plural:?}"))?;
    print!(
        "{}",
        yaml_serde::to_string(&crd).map_err(|e| e.to_string())?
    );
    Ok(())
}

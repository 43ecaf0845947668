//! `oneinbox-operator import`: a `PhoneNumber` manifest with `managementPolicy: Observe` for
//! every registration of a OneInbox workspace, ready to commit to a GitOps repository
//! (docs/migrating.md).
//!
//! Everything is gathered first (the list API, then the cluster's PhoneNumbers when asked),
//! every manifest is rendered and named, and only then is anything written: to stdout, or to a
//! temporary directory whose files are then renamed into `--output-dir`. A wrong key, an
//! unreachable API or a bad output directory writes nothing. The rendering, naming and skip
//! rules are pure functions, tested below.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kube::ResourceExt;

use crate::config::{ImportArgs, read_api_key};
use crate::crd::{
    ANNOTATION_PHONE_NUMBER_ID, Fallback, InboundRouting, ManagementPolicy, PhoneNumber,
    PhoneNumberSpec, Provider,
};
use crate::oneinbox::{ApiError, Registration};

/// Placeholders of `--name-template`.
const PLACEHOLDERS: [&str; 3] = ["number", "id", "provider"];

/// Why an import stopped. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Bad flags or input: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The API, the cluster or the file system failed: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl ImportError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ImportError::Usage(_) => 2,
            ImportError::Failed(_) => 1,
        }
    }
}

/// Whether `s` is a Kubernetes object name (an RFC 1123 subdomain: lower-case labels of
/// letters, digits and `-`, separated by `.`, at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

/// Refuse a template with an unknown or unclosed placeholder, or none that tells numbers
/// apart (`{number}` or `{id}`).
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    let mut distinct = false;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "--name-template {template:?}: unclosed \"{{\" (placeholders: {{number}}, {{id}}, {{provider}})"
            ));
        };
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "--name-template {template:?}: unknown placeholder {{{name}}} (use {{number}}, {{id}} or {{provider}})"
            ));
        }
        distinct |= name == "number" || name == "id";
        rest = &after[end + 1..];
    }
    if rest.contains('}') {
        return Err(format!(
            "--name-template {template:?}: \"}}\" without \"{{\""
        ));
    }
    if !distinct {
        return Err(format!(
            "--name-template {template:?} gives every number the same name: include {{number}} or {{id}}"
        ));
    }
    Ok(())
}

/// The number as a name part: its digits, without the "+".
pub fn sanitised_number(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// `metadata.name` for `reg` from the template (checked by `check_template`).
pub fn render_name(template: &str, reg: &Registration) -> Result<String, String> {
    let name = template
        .replace("{number}", &sanitised_number(&reg.phone_number))
        .replace("{id}", &reg.id.to_ascii_lowercase())
        .replace("{provider}", &reg.provider.to_ascii_lowercase());
    if is_dns_subdomain(&name) {
        Ok(name)
    } else {
        Err(format!(
            "--name-template {template:?} gives {name:?} for {} ({}), which is not a valid Kubernetes name (lower case letters, digits, \"-\" and \".\", at most 253 characters)",
            reg.phone_number, reg.id
        ))
    }
}

/// The numbers and registration ids that PhoneNumbers in the cluster already claim, with the
/// object that claims each (`namespace/name`); for a number, also the id that object knows, and
/// its Stalled reason (a claim that manages nothing yet).
#[derive(Debug, Default)]
pub struct Claims {
    numbers: HashMap<String, NumberClaim>,
    ids: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct NumberClaim {
    who: String,
    id: Option<String>,
    stalled: Option<String>,
}

impl Claims {
    pub fn of<'a>(objects: impl IntoIterator<Item = &'a PhoneNumber>) -> Claims {
        let mut claims = Claims::default();
        for o in objects {
            let who = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
            let stalled = o
                .condition(crate::conditions::STALLED)
                .filter(|c| c.status == "True")
                .map(|c| c.reason.clone());
            claims
                .numbers
                .entry(o.spec.phone_number.clone())
                .or_insert_with(|| NumberClaim {
                    who: who.clone(),
                    id: o.known_id(),
                    stalled,
                });
            for id in [
                o.known_id(),
                o.annotation(ANNOTATION_PHONE_NUMBER_ID).map(str::to_owned),
            ]
            .into_iter()
            .flatten()
            {
                claims.ids.entry(id).or_insert_with(|| who.clone());
            }
        }
        claims
    }
}

/// Why `reg` gets no manifest, if it does not: a PhoneNumber already manages its id or its
/// number, or the operator cannot represent it (a provider it does not know).
pub fn skip_reason(reg: &Registration, claims: &Claims) -> Option<String> {
    if let Some(who) = claims.ids.get(&reg.id) {
        return Some(format!(
            "PhoneNumber {who} already manages registration {}",
            reg.id
        ));
    }
    if let Some(NumberClaim { who, id, stalled }) = claims.numbers.get(&reg.phone_number) {
        // Skipped either way: a manifest would make a second claimant of the number.
        return Some(match (id, stalled) {
            (Some(id), _) => {
                format!("PhoneNumber {who} claims the number with another registration ({id})")
            }
            (None, Some(reason)) => format!(
                "PhoneNumber {who} claims the number but manages no registration (Stalled: {reason}); to let it manage this one, annotate it: kubectl -n {} annotate phonenumber {} {ANNOTATION_PHONE_NUMBER_ID}={}",
                who.split('/').next().unwrap_or_default(),
                who.split('/').nth(1).unwrap_or_default(),
                reg.id
            ),
            (None, None) => {
                format!("PhoneNumber {who} claims the number (it is registering it or waiting)")
            }
        });
    }
    if provider_of(reg).is_none() {
        return Some(format!(
            "provider {:?} is not one the operator manages (twilio, telnyx)",
            reg.provider
        ));
    }
    None
}

fn provider_of(reg: &Registration) -> Option<Provider> {
    match reg.provider.to_ascii_lowercase().as_str() {
        "twilio" => Some(Provider::Twilio),
        "telnyx" => Some(Provider::Telnyx),
        _ => None,
    }
}

/// The PhoneNumber that observes `reg`: the spec fields the API returns, the id annotation,
/// `managementPolicy: Observe`. No credentials: the API never returns them.
pub fn manifest(reg: &Registration, namespace: &str, name: &str) -> Option<PhoneNumber> {
    let routing = reg.inbound_routing.as_ref().map(|r| InboundRouting {
        agent_id: r.agent_id.clone(),
        fallback: r.fallback.as_ref().map(|f| Fallback {
            agent_id: f.agent_id.clone(),
        }),
        voicemail_message: r.voicemail_message.clone(),
    });
    let mut pn = PhoneNumber::new(
        name,
        PhoneNumberSpec {
            phone_number: reg.phone_number.clone(),
            provider: provider_of(reg)?,
            agent_id: reg.agent_id.clone(),
            friendly_name: reg.friendly_name.clone(),
            provider_config: None,
            credential_id: None,
            inbound_routing: routing,
            // Unset: the account's or the operator's default decides, as for any object.
            deletion_policy: None,
            deletion_protection: false,
            replacement_policy: Default::default(),
            management_policy: ManagementPolicy::Observe,
            account_ref: None,
        },
    );
    pn.metadata.namespace = Some(namespace.to_owned());
    pn.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_PHONE_NUMBER_ID.to_owned(),
        reg.id.clone(),
    )]));
    Some(pn)
}

/// The comment above each manifest: where it came from, and how to add the credentials
/// before switching to Full.
fn header(reg: &Registration) -> String {
    format!(
        "# Imported by `oneinbox-operator import` from OneInbox registration {id} ({number}).\n\
         # managementPolicy: Observe: the operator mirrors the registration into status and never\n\
         # changes or deregisters it; deleting this object leaves the number registered.\n\
         #\n\
         # To let the operator manage it (managementPolicy: Full), add the SIP credentials first.\n\
         # They are write-only in the OneInbox API, which cannot return them, so they are not here.\n\
         # Add either\n\
         #   providerConfig:\n\
         #     trunkAddress: <the carrier's SIP host>\n\
         #     authUsername: <the SIP user name>\n\
         #     authPasswordSecretRef: {{name: <a Secret in this namespace with the key \"password\">}}\n\
         # or\n\
         #   credentialId: <uuid of a telephony integration stored in OneInbox>\n\
         # then set managementPolicy: Full. A spec that matches the registration changes nothing;\n\
         # a field that differs is corrected with one update. Under Full, deleting this object\n\
         # deregisters the number unless deletionPolicy (or, unset, its account's or the\n\
         # operator's default) is Orphan.\n",
        id = reg.id,
        number = reg.phone_number
    )
}

/// One manifest as a YAML document with its comment.
pub fn render(pn: &PhoneNumber, reg: &Registration) -> Result<String, String> {
    let yaml = yaml_serde::to_string(pn).map_err(|e| format!("cannot render YAML: {e}"))?;
    Ok(format!("{}{yaml}", header(reg)))
}

/// The rendered manifests, one per registration that is not skipped, by name; and the
/// messages about the skipped ones.
#[derive(Debug)]
pub struct Plan {
    pub files: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

/// Name, skip and render every registration; refuses two registrations with one name.
pub fn plan(
    regs: &[Registration],
    claims: &Claims,
    namespace: &str,
    template: &str,
) -> Result<Plan, String> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut names: HashMap<String, &str> = HashMap::new();
    for reg in regs {
        if let Some(why) = skip_reason(reg, claims) {
            skipped.push(format!("skipping {} ({}): {why}", reg.phone_number, reg.id));
            continue;
        }
        let name = render_name(template, reg)?;
        if let Some(other) = names.insert(name.clone(), &reg.id) {
            return Err(format!(
                "--name-template {template:?} gives the name {name:?} to registrations {other} and {}; include {{id}} or {{number}}",
                reg.id
            ));
        }
        let Some(pn) = manifest(reg, namespace, &name) else {
            continue;
        };
        files.push((name, render(&pn, reg)?));
    }
    Ok(Plan { files, skipped })
}

/// Refuse an output directory that is a file, or that holds anything while `force` is off.
pub fn check_output_dir(dir: &Path, force: bool) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if !force && entries.next().is_some() {
                return Err(format!(
                    "--output-dir {} is not empty; pass --force to write into it (files of the same name are replaced, others kept)",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("--output-dir {}: {e}", dir.display())),
    }
}

/// Write every file into a temporary directory next to (or, when it exists, inside) `dir`,
/// then move them into place: a failure while writing leaves `dir` as it was.
fn write_files(dir: &Path, files: &[(String, String)]) -> Result<(), String> {
    let exists = dir.is_dir();
    let staging_parent = if exists {
        dir.to_path_buf()
    } else {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "import".into());
    let staging = staging_parent.join(format!(
        ".{base}.import-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let fail = |what: String, staging: &Path| {
        let _ = std::fs::remove_dir_all(staging);
        what
    };
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    for (name, text) in files {
        let path = staging.join(format!("{name}.yaml"));
        if let Err(e) = std::fs::write(&path, text) {
            return Err(fail(
                format!("cannot write {}: {e}", path.display()),
                &staging,
            ));
        }
    }
    if !exists {
        return std::fs::rename(&staging, dir).map_err(|e| {
            fail(
                format!(
                    "cannot move {} to {}: {e}",
                    staging.display(),
                    dir.display()
                ),
                &staging,
            )
        });
    }
    for (name, _) in files {
        let file = format!("{name}.yaml");
        if let Err(e) = std::fs::rename(staging.join(&file), dir.join(&file)) {
            return Err(fail(
                format!("cannot move {file} into {}: {e}", dir.display()),
                &staging,
            ));
        }
    }
    let _ = std::fs::remove_dir(&staging);
    Ok(())
}

/// What an API failure means to the person running the import.
fn api_failure(e: ApiError, url: &reqwest::Url) -> ImportError {
    let hint = match &e {
        ApiError::KeyRejected { .. } => "; check ONEINBOX_API_KEY or --api-key-file",
        ApiError::Unavailable { what, .. } if what == "connection" || what == "timeout" => {
            "; check --api-url and the network"
        }
        _ => "",
    };
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    ImportError::Failed(format!(
        "listing the registrations at {shown} failed: {e}{hint}. Nothing was written"
    ))
}

/// The PhoneNumbers of the cluster, when a kubeconfig or the ambient configuration is asked for.
/// Refuse settings that cannot work, with the flag to change in the message.
pub fn check_args(args: &ImportArgs) -> Result<(), String> {
    crate::oneinbox::http::check_api_url(&args.api.api_url, args.api.allow_insecure_http)?;
    check_template(&args.name_template)?;
    if !is_dns_subdomain(&args.namespace) || args.namespace.contains('.') {
        return Err(format!(
            "--namespace {:?} is not a valid namespace name (lower case letters, digits and \"-\")",
            args.namespace
        ));
    }
    if let Some(dir) = &args.output_dir {
        check_output_dir(dir, args.force)?;
    }
    Ok(())
}

async fn cluster_objects(args: &ImportArgs) -> Result<Option<Vec<PhoneNumber>>, ImportError> {
    let config = if let Some(path) = &args.kubeconfig {
        let kc = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| ImportError::Usage(format!("--kubeconfig {}: {e}", path.display())))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| ImportError::Usage(format!("--kubeconfig {}: {e}", path.display())))?
    } else if args.check_cluster {
        kube::Config::infer()
            .await
            .map_err(|e| ImportError::Usage(format!("no Kubernetes configuration: {e}")))?
    } else {
        return Ok(None);
    };
    let mut config = config;
    config.default_retry = false;
    let client = kube::Client::try_from(config)
        .map_err(|e| ImportError::Failed(format!("cannot build the Kubernetes client: {e}")))?;
    let api: kube::Api<PhoneNumber> = kube::Api::all(client);
    let list = api.list(&Default::default()).await.map_err(|e| {
        ImportError::Failed(format!(
            "cannot list the PhoneNumbers of the cluster: {e}. Nothing was written"
        ))
    })?;
    Ok(Some(list.items))
}

/// The whole import: gather, plan, then write.
pub async fn run(args: &ImportArgs) -> Result<(), ImportError> {
    let client = import_client(args)?;
    eprintln!("listing the registrations of the OneInbox workspace…");
    let regs = client
        .list_all(args.page_size)
        .await
        .map_err(|e| api_failure(e, &args.api.api_url))?;
    eprintln!("found {} registrations", regs.len());

    let claims = cluster_claims(args).await?;
    let plan =
        plan(&regs, &claims, &args.namespace, &args.name_template).map_err(ImportError::Usage)?;
    for line in &plan.skipped {
        eprintln!("{line}");
    }
    write_manifests(args, &plan.files)?;
    let place = match &args.output_dir {
        Some(dir) => format!(" into {}", dir.display()),
        None => String::new(),
    };
    eprintln!(
        "wrote {} manifests{place} (managementPolicy: Observe), skipped {}",
        plan.files.len(),
        plan.skipped.len()
    );
    Ok(())
}

/// A OneInbox client for the import: one call at a time, at most ten a second.
fn import_client(args: &ImportArgs) -> Result<crate::oneinbox::http::HttpClient, ImportError> {
    let key = read_api_key(args.api.api_key_file.as_deref()).map_err(ImportError::Usage)?;
    let extra_roots = match &args.api.api_ca_file {
        Some(path) => crate::oneinbox::http::load_ca_file(path).map_err(ImportError::Usage)?,
        None => Vec::new(),
    };
    let one = std::num::NonZeroU32::MIN;
    crate::oneinbox::http::HttpClient::new(
        crate::oneinbox::http::HttpClientConfig {
            base_url: args.api.api_url.clone(),
            api_key: key,
            api_key_file: None,
            timeout: args.api_timeout,
            connect_timeout: args.api_timeout.min(std::time::Duration::from_secs(5)),
            rate_per_second: one.saturating_add(9),
            burst: one.saturating_add(9),
            max_in_flight: 1,
            max_retry_after: std::time::Duration::from_secs(60),
            extra_roots,
        },
        crate::metrics::Metrics::new(),
    )
    .map_err(|e| ImportError::Failed(format!("cannot build the OneInbox client: {e}")))
}

/// The numbers PhoneNumbers in the cluster already manage (none when no cluster is checked).
async fn cluster_claims(args: &ImportArgs) -> Result<Claims, ImportError> {
    Ok(match cluster_objects(args).await? {
        Some(objects) => {
            eprintln!(
                "the cluster has {} PhoneNumbers; numbers they manage are skipped",
                objects.len()
            );
            Claims::of(&objects)
        }
        None => {
            eprintln!(
                "not checking a cluster for numbers already managed (no --kubeconfig or --check-cluster)"
            );
            Claims::default()
        }
    })
}

/// The manifests to stdout (one YAML stream), or as files into the output directory.
fn write_manifests(args: &ImportArgs, files: &[(String, String)]) -> Result<(), ImportError> {
    match &args.output_dir {
        None => {
            let mut out = String::new();
            for (i, (_, text)) in files.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(text);
            }
            use std::io::Write;
            std::io::stdout()
                .write_all(out.as_bytes())
                .map_err(|e| ImportError::Failed(format!("cannot write to stdout: {e}")))?;
        }
        Some(dir) => {
            // Checked again: the directory may have changed while the API answered.
            check_output_dir(dir, args.force).map_err(ImportError::Usage)?;
            write_files(dir, files).map_err(ImportError::Failed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oneinbox::{Routing, RoutingFallback};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    const AGENT: &str = "3c90c3cc-0d44-4b50-8888-8dd25736052a";

    fn reg(id: &str, number: &str) -> Registration {
        Registration {
            id: id.into(),
            phone_number: number.into(),
            friendly_name: Some("Sales line".into()),
            provider: "twilio".into(),
            agent_id: AGENT.into(),
            status: "active".into(),
            inbound_trunk_id: Some("ST_in".into()),
            outbound_trunk_id: Some("ST_out".into()),
            dispatch_rule_id: Some("SDR_1".into()),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            inbound_routing: Some(Routing {
                agent_id: None,
                fallback: Some(RoutingFallback {
                    agent_id: AGENT.into(),
                }),
                voicemail_message: Some("Sorry".into()),
            }),
        }
    }

    fn object(ns: &str, name: &str, number: &str, id: Option<&str>) -> PhoneNumber {
        let mut pn = manifest(&reg("x", number), ns, name).expect("manifest");
        pn.metadata.annotations =
            id.map(|id| BTreeMap::from([(ANNOTATION_PHONE_NUMBER_ID.to_owned(), id.to_owned())]));
        pn
    }

    #[test]
    fn name_templates() {
        let r = reg("5185C781-dc91-47ea-bdcc-f73045fc1ac5", "+442071838750");
        let table = [
            ("pn-{number}", Ok("pn-442071838750")),
            ("{provider}-{number}", Ok("twilio-442071838750")),
            ("num-{id}", Ok("num-5185c781-dc91-47ea-bdcc-f73045fc1ac5")),
            ("Sales-{number}", Err("not a valid Kubernetes name")),
            ("-{number}", Err("not a valid Kubernetes name")),
        ];
        for (template, want) in table {
            check_template(template).expect(template);
            let got = render_name(template, &r);
            match want {
                Ok(name) => assert_eq!(got.as_deref(), Ok(name), "{template}"),
                Err(why) => assert!(got.unwrap_err().contains(why), "{template}"),
            }
        }
        for (bad, why) in [
            ("pn-{numbr}", "unknown placeholder {numbr}"),
            ("pn-{number", "unclosed"),
            ("pn-number}", "without"),
            ("pn-{provider}", "the same name"),
            ("static", "the same name"),
        ] {
            let err = check_template(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert_eq!(sanitised_number("+15551234567"), "15551234567");
    }

    #[test]
    fn dns_subdomains() {
        for ok in ["a", "pn-1555", "a.b-c", &"x".repeat(63)] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a_b", "+1555", &"x".repeat(64)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn numbers_and_ids_managed_in_the_cluster_are_skipped() {
        let stalled = {
            let mut o = object("voice", "stalled", "+15550000005", None);
            o.status = Some(crate::crd::PhoneNumberStatus {
                conditions: vec![Condition {
                    type_: "Stalled".into(),
                    status: "True".into(),
                    reason: "AlreadyRegistered".into(),
                    message: String::new(),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                }],
                ..Default::default()
            });
            o
        };
        let holding = {
            let mut o = object("voice", "holding", "+15550000006", None);
            o.status = Some(crate::crd::PhoneNumberStatus {
                phone_number_id: Some("id-other".into()),
                ..Default::default()
            });
            o
        };
        let objects = [
            object("voice", "by-number", "+15550000001", None),
            object("sales", "by-id", "+15550000099", Some("id-2")),
            stalled,
            holding,
        ];
        let claims = Claims::of(&objects);
        let table = [
            (
                reg("id-1", "+15550000001"),
                Some(
                    "PhoneNumber voice/by-number claims the number (it is registering it or waiting)",
                ),
            ),
            (
                reg("id-5", "+15550000005"),
                Some(
                    "PhoneNumber voice/stalled claims the number but manages no registration (Stalled: AlreadyRegistered); to let it manage this one, annotate it: kubectl -n voice annotate phonenumber stalled oneinbox.ai/phone-number-id=id-5",
                ),
            ),
            (
                reg("id-6", "+15550000006"),
                Some(
                    "PhoneNumber voice/holding claims the number with another registration (id-other)",
                ),
            ),
            (
                reg("id-2", "+15550000002"),
                Some("PhoneNumber sales/by-id already manages registration id-2"),
            ),
            (reg("id-3", "+15550000003"), None),
            (
                Registration {
                    provider: "vonage".into(),
                    ..reg("id-4", "+15550000004")
                },
                Some("provider \"vonage\" is not one the operator manages"),
            ),
        ];
        for (r, want) in table {
            let got = skip_reason(&r, &claims);
            match want {
                None => assert_eq!(got, None, "{}", r.id),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(w)),
                    "{}: {got:?}",
                    r.id
                ),
            }
        }
        assert!(skip_reason(&reg("id-1", "+15550000001"), &Claims::default()).is_none());
    }

    #[test]
    fn a_manifest_observes_with_the_id_and_says_how_to_add_credentials() {
        let r = reg("id-1", "+15551234567");
        let pn = manifest(&r, "voice", "pn-15551234567").expect("manifest");
        let text = render(&pn, &r).unwrap();
        let (comment, yaml): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with('#'));
        let comment = comment.join("\n");
        assert!(comment.contains("providerConfig:"), "{comment}");
        assert!(comment.contains("credentialId:"), "{comment}");
        assert!(comment.contains("write-only"), "{comment}");
        assert!(comment.contains("managementPolicy: Full"), "{comment}");
        let parsed: serde_json::Value = yaml_serde::from_str(&yaml.join("\n")).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "apiVersion": "oneinbox.ai/v1alpha1", "kind": "PhoneNumber",
                "metadata": {"name": "pn-15551234567", "namespace": "voice",
                             "annotations": {"oneinbox.ai/phone-number-id": "id-1"}},
                "spec": {"phoneNumber": "+15551234567", "provider": "twilio", "agentId": AGENT,
                         "friendlyName": "Sales line",
                         "inboundRouting": {"fallback": {"agentId": AGENT}, "voicemailMessage": "Sorry"},
                         "replacementPolicy": "Manual",
                         "managementPolicy": "Observe"}
            })
        );
        // It reads back as the object it was made from.
        let back: PhoneNumber = yaml_serde::from_str(&text).unwrap();
        assert_eq!(back, pn);
    }

    #[test]
    fn a_plan_skips_and_refuses_two_registrations_with_one_name() {
        let regs = [reg("id-1", "+15550000001"), reg("id-2", "+15550000002")];
        let objects = [object("voice", "held", "+15550000001", None)];
        let plan = plan(&regs, &Claims::of(&objects), "voice", "pn-{number}").unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].0, "pn-15550000002");
        assert_eq!(plan.skipped.len(), 1);
        assert!(
            plan.skipped[0].starts_with("skipping +15550000001 (id-1)"),
            "{:?}",
            plan.skipped
        );
        let twins = [reg("id-1", "+15550000001"), reg("id-2", "+15550000001")];
        let err = super::plan(&twins, &Claims::default(), "voice", "pn-{number}").unwrap_err();
        assert!(err.contains("id-1 and id-2"), "{err}");
    }

    #[test]
    fn output_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("new");
        assert!(check_output_dir(&missing, false).is_ok());
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(check_output_dir(&empty, false).is_ok());
        std::fs::write(empty.join("keep.yaml"), "x").unwrap();
        let err = check_output_dir(&empty, false).unwrap_err();
        assert!(
            err.contains("not empty") && err.contains("--force"),
            "{err}"
        );
        assert!(check_output_dir(&empty, true).is_ok());
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(check_output_dir(&file, true).is_err());

        let files = vec![
            ("a".to_string(), "A".to_string()),
            ("b".to_string(), "B".to_string()),
        ];
        write_files(&missing, &files).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&missing)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.yaml", "b.yaml"]);
        write_files(&empty, &files).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&empty)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["a.yaml", "b.yaml", "keep.yaml"],
            "no staging directory left"
        );
    }
}

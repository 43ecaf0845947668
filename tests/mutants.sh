#!/usr/bin/env bash
# The mutation table (make mutants; docs/model-test.md): realistic defects are applied one at a
# time to a scratch copy of the repository, and the model test's gate (MODEL_SEED=1, 10,000
# cases) runs on each. A defect the gate does not catch is a gap in the model.
#
# MUTANTS_ONLY=name,name  run only these; MUTANTS_DIR (default target/mutants) holds the copy
# (repo/), one shared CARGO_TARGET_DIR (target/: each mutant is an incremental build of the
# crate) and each run's output (logs/). MODEL_CASES and MODEL_SEED change the gate.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${MUTANTS_DIR:-$root/target/mutants}
copy=$work/repo
logs=$work/logs
export CARGO_TARGET_DIR=$work/target
seed=${MODEL_SEED:-1}
cases=${MODEL_CASES:-10000}
mkdir -p "$copy" "$logs" "$CARGO_TARGET_DIR"

# The first run starts from the worktree's own debug build, if there is one: the dependencies
# are then not compiled once more.
if [[ ! -d $CARGO_TARGET_DIR/debug && -d $root/target/debug/deps ]]; then
  cp -a "$root/target/debug" "$CARGO_TARGET_DIR/"
fi

# name | description. Each name is a mutation in the Python table below.
mutants=(
  "post-after-409|a second POST after a 409 (a stalled object POSTs again instead of looking the number up)"
  "agent-bytes|an upper-case agentId compared by bytes"
  "orphan-deletes|Orphan still DELETEs"
  "delete-skips|Delete skips the DELETE"
  "401-permanent|a 401 treated as permanent (a rejected request)"
  "ns-ownership|ownership checked only within the object's namespace"
  "cache-forever|a drift check that trusts its cached copy forever"
  "generation-stuck|observedGeneration never moving"
  "repeat-409-foreign|a 409 for the attempt's own POST read as someone else's registration, without reading it"
  "adopt-no-finalizer|an adoption that never gets its finalizer, a re-adoption looking only at the status id"
  "routing-bytes|routing and fallback uuids compared by bytes"
  "condition-generation|conditions written without observedGeneration"
  "observe-patches|Observe honoured only until the object names a registration (then drift is PATCHed)"
  "observe-deletes|a deletion under Observe deregisters (Observe not read by the deletion)"
  "password-echo|API error texts copied into status verbatim (the redaction of the SIP password removed)"
  "key-echo|an error body that echoes the API key handed on as it came"
  "blank-password|a blank password taken for one (only an empty value refused)"
  "poll-floor|the poll-interval annotation not clamped to the floor"
  "adopt-patch-loop|a PATCH refused right after an adoption read as no adoption yet (adopted and PATCHed again)"
  "marker-no-finalizer|a POST under an attempt's marker without the finalizer (the switch back from Observe)"
  "kube-error-ignored|a failed Kubernetes write of the attempt's marker and finalizer ignored (the POST goes ahead)"
  "account-key-ignored|an account's client not taken by the pass (its calls go with the operator-wide key)"
  "grant-once|a cluster account's grant checked only until the object holds a registration (a revoked grant still served)"
  "claims-across-accounts|a number's claims not kept per account (objects on two accounts yield to each other)"
)

# Write the pristine tree into the copy: only files that differ are rewritten (with a new
# mtime, so cargo sees the change back), the rest keep theirs.
sync_copy() {
  (cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    python3 -c '
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
for f in sys.stdin.read().split("\0"):
    a, b = os.path.join(src, f), os.path.join(dst, f)
    if not f or not os.path.isfile(a):
        continue
    data = open(a, "rb").read()
    if os.path.isfile(b) and open(b, "rb").read() == data:
        continue
    os.makedirs(os.path.dirname(b), exist_ok=True)
    shutil.copyfile(a, b)
    shutil.copymode(a, b)
' "$root" "$copy"
}

apply() {
  python3 - "$copy" "$1" <<'PY'
import sys
copy, name = sys.argv[1], sys.argv[2]
D = "src/controller/decide.rs"
DD = "src/controller/decide/deletion.rs"
M = {
    "post-after-409": [(D,
        "    if refused_for_this_input(reason::ALREADY_REGISTERED) {",
        "    if false && refused_for_this_input(reason::ALREADY_REGISTERED) {")],
    "agent-bytes": [("src/controller/plan.rs",
        "agent_id: digest(uuid(Some(agent_id))),",
        "agent_id: digest(Some(agent_id)),")],
    "orphan-deletes": [(DD,
        "} else if obj.spec.deletion_policy == Some(DeletionPolicy::Orphan) {",
        "} else if obj.spec.deletion_policy == Some(DeletionPolicy::Orphan) && false {")],
    "delete-skips": [(DD,
        "_ => return Step::Deregister { id },",
        "_ => return Step::Release { released: Some(id), event: None },")],
    "401-permanent": [("src/oneinbox/mod.rs",
        "401 | 403 => ApiError::KeyRejected {",
        "403 => ApiError::KeyRejected {")],
    "ns-ownership": [("src/controller/claims.rs",
        ".filter(|o| o.uid() != uid && o.spec.phone_number == obj.spec.phone_number)",
        ".filter(|o| o.uid() != uid && o.spec.phone_number == obj.spec.phone_number)\n        .filter(|o| o.metadata.namespace == obj.metadata.namespace)"),
        ("src/controller/claims.rs",
        ".filter(|o| o.uid() != uid && o.known_id().as_deref() == Some(id))",
        ".filter(|o| o.uid() != uid && o.known_id().as_deref() == Some(id))\n        .filter(|o| o.metadata.namespace == obj.metadata.namespace)")],
    "cache-forever": [(D,
        ".is_none_or(|i| obs.now.saturating_duration_since(checked.at) < i);",
        ".is_none_or(|_| true);")],
    "generation-stuck": [("src/controller/status.rs",
        "        observed_generation: generation,\n        phone_number_id: data.remote.phone_number_id,",
        "        observed_generation: obj.status.as_ref().and_then(|s| s.observed_generation).or(generation),\n        phone_number_id: data.remote.phone_number_id,")],
    "repeat-409-foreign": [(D,
        "                None => Step::Read(Read::Registration(phone_id.clone())),",
        "                None => already_registered(obs, phone_id, PatchableDigest::unread()),")],
    "adopt-no-finalizer": [("src/controller/act.rs",
        "                self.add_finalizer(obs).await?;\n                let note = if takeover {",
        "                let note = if takeover {"),
        (D,
        "if (!holds || !obj.has_finalizer()) && !adopted_now {",
        "if !holds && !adopted_now {")],
    "routing-bytes": [("src/controller/plan.rs",
        "routing_agent_id: digest(uuid(routing.agent_id.as_deref())),",
        "routing_agent_id: digest(routing.agent_id.as_deref()),"),
        ("src/controller/plan.rs",
        "fallback: digest(uuid(routing.fallback.as_ref().map(|f| f.agent_id.as_str()))),",
        "fallback: digest(routing.fallback.as_ref().map(|f| f.agent_id.as_str())),")],
    "observe-patches": [("src/controller/decide/apply.rs",
        "        obs.obj\n            .is_observe_only()\n            .then(|| decide_observe(obs, settings)),",
        "        (obs.obj.is_observe_only() && obs.obj.known_id().is_none())\n            .then(|| decide_observe(obs, settings)),")],
    "observe-deletes": [("src/controller/decide/deletion.rs",
        "let (because, unless_changed) = if obj.is_observe_only() {",
        "let (because, unless_changed) = if false && obj.is_observe_only() {")],
    "password-echo": [("src/controller/redact.rs",
        "if s.len() >= MIN_SECRET_LEN && out.contains(s.as_str()) {",
        "if false && s.len() >= MIN_SECRET_LEN && out.contains(s.as_str()) {")],
    "key-echo": [("src/oneinbox/mod.rs",
        "let body = if key.len() >= 8 {",
        "let body = if false && key.len() >= 8 {")],
    "blank-password": [("src/secrets.rs",
        "Ok(v) if !v.trim().is_empty() => Ok(SecretString::new(",
        "Ok(v) if !v.is_empty() => Ok(SecretString::new(")],
    "poll-floor": [("src/controller/polling.rs",
        "Some(Ok(d)) => Some(d.max(floor)),",
        "Some(Ok(d)) => Some(d),")],
    "adopt-patch-loop": [(D,
        "let adopted_now = matches!(obs.last, Outcome::Adopted | Outcome::Patched { .. });",
        "let adopted_now = matches!(obs.last, Outcome::Adopted);")],
    "marker-no-finalizer": [("src/controller/act.rs",
        "} else if !obs.obj.has_finalizer() {\n                    // A marker left",
        "} else if false {\n                    // A marker left")],
    "kube-error-ignored": [("src/controller/act.rs",
        "            metadata[\"finalizers\"] = finalizers;\n        }\n        self.patch_metadata(obs, metadata).await\n    }",
        "            metadata[\"finalizers\"] = finalizers;\n        }\n        let _ = self.patch_metadata(obs, metadata).await;\n        Ok(())\n    }")],
    "account-key-ignored": [("src/controller/act.rs",
        "(ApiKey::Account(_), Some(c)) => self.oneinbox = c,",
        "(ApiKey::Account(_), Some(_)) => {}")],
    "grant-once": [("src/controller/observe.rs",
        "if let Err(rule) = stores.grants(&account, &obs.namespace()) {",
        "if let Err(rule) = stores.grants(&account, &obs.namespace())\n                    && obs.obj.status.as_ref().and_then(|s| s.phone_number_id.as_ref()).is_none()\n                {")],
    "claims-across-accounts": [("src/controller/claims.rs",
        "    account.hash(&mut h);\n    value.hash(&mut h);",
        "    let _ = account;\n    value.hash(&mut h);"),
        ("src/controller/claims.rs",
        "let account_matches = o.account(default_account) == account;",
        "let account_matches = true;")],
    "condition-generation": [("src/conditions.rs",
        "                last_transition_time,\n                observed_generation: generation,",
        "                last_transition_time,\n                observed_generation: None,")],
}
for path, old, new in M[name]:
    p = f"{copy}/{path}"
    text = open(p).read()
    if text.count(old) != 1:
        sys.exit(f"{name}: expected one occurrence in {path} of: {old}")
    open(p, "w").write(text.replace(old, new))
PY
}

printf '| defect | caught | invariant | cases to failure | shrunk steps | seconds |\n'
printf '|---|---|---|---|---|---|\n'
missed=0
for m in "${mutants[@]}"; do
  name=${m%%|*}
  what=${m#*|}
  if [[ -n ${MUTANTS_ONLY:-} && ",$MUTANTS_ONLY," != *",$name,"* ]]; then
    continue
  fi
  sync_copy
  log=$logs/$name.log
  if ! apply "$name" >"$log" 2>&1; then
    printf '| %s | not applied (%s) | | | | |\n' "$what" "$(tail -1 "$log")"
    missed=$((missed + 1))
    continue
  fi
  # Every source of the crate newer than any build in the shared target directory: cargo
  # never takes an earlier build (another mutant, another copy) for this one.
  find "$copy/src" "$copy/tests" -name '*.rs' -exec touch {} +
  start=$(date +%s)
  set +e
  (cd "$copy" && MODEL_SEED=$seed MODEL_CASES=$cases \
    cargo test --quiet --all-features --test model) >>"$log" 2>&1
  rc=$?
  set -e
  secs=$(($(date +%s) - start))
  failed=$(grep -m1 -o 'case failed; replay with MODEL_SEED=[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  if [[ -n $failed ]]; then
    invariant=$(grep -A1 -m1 '^violations:' "$log" | tail -1 | grep -o '^([a-z])\|^model gap' || true)
    steps=$(grep -m1 -o 'shrunk sequence ([0-9]* steps)' "$log" | grep -o '[0-9]*' || true)
    printf '| %s | yes | %s | %s | %s | %s |\n' "$what" "$invariant" "$((failed - seed + 1))" "$steps" "$secs"
  elif failed_test=$(grep -m1 -o '^tests::[a-z0-9_]* --- FAILED' "$log" | cut -d' ' -f1) && [[ -n $failed_test ]]; then
    # The generated cases passed; a named regression case of the model test failed.
    printf '| %s | yes, by the regression case %s only (the %s generated cases passed) | | | | %s |\n' "$what" "${failed_test#tests::}" "$cases" "$secs"
  elif [[ $rc -ne 0 ]]; then
    printf '| %s | no: the build or the run failed (%s) | | | | %s |\n' "$what" "$log" "$secs"
    missed=$((missed + 1))
  else
    printf '| %s | **no** | | %s passed | | %s |\n' "$what" "$cases" "$secs"
    missed=$((missed + 1))
  fi
done
sync_copy
echo "mutants missed: $missed"
[[ $missed -eq 0 ]]

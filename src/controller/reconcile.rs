//! One pass over one PhoneNumber: observe → decide → act, until a step ends the pass.
//! `decide` makes every decision (pure, table-tested); `act` carries them out.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::debug;

use super::Context;
use super::act::{Driver, Next};
use super::decide::decide;
use super::observe::Observation;
use crate::crd::PhoneNumber;
use crate::error::{Error, Result};
use crate::mutex::lock;
use crate::oneinbox::OneInboxApi;

/// Most steps one pass takes. The longest path (replace: read key, read Secret, GET, DELETE,
/// POST, persist, annotate, report) takes about ten; more means the table does not converge.
const MAX_STEPS: usize = 24;

/// Reconcile one PhoneNumber.
pub async fn reconcile<C: OneInboxApi>(
    obj: Arc<PhoneNumber>,
    ctx: Arc<Context<C>>,
) -> Result<Action> {
    let ns = obj
        .namespace()
        .ok_or(Error::InvalidObject("metadata.namespace"))?;
    // A pass for an object older than our own last write of it is the echo of an earlier
    // event; the watch event of that write is on its way and brings the object back.
    let uid = obj.uid().unwrap_or_default();
    let seen = obj.resource_version().and_then(|rv| rv.parse::<u64>().ok());
    let began = lock(&ctx.memory).begin_pass(&uid, seen);
    if let Err(ours) = began {
        debug!(
            seen,
            ours, "stale view of the object; waiting for the watch to catch up"
        );
        return Ok(Action::await_change());
    }
    let res = pass(&ctx, (*obj).clone(), &ns).await;
    if lock(&ctx.memory).end_pass(&uid) {
        // The watch events of this pass's writes were skipped and it did not end settled:
        // one more pass in their place, as the watch would have started.
        let _ = ctx.siblings.send(super::cache_key(&obj));
    }
    res
}

/// Observe, decide and act until a step ends the pass.
async fn pass<C: OneInboxApi>(ctx: &Context<C>, obj: PhoneNumber, ns: &str) -> Result<Action> {
    let mut obs = Observation::start(ctx, obj);
    let mut driver = Driver::new(ctx, ns);
    for _ in 0..MAX_STEPS {
        let mut step = decide(&obs, &ctx.settings);
        loop {
            // The kind of step only: its data can hold API texts.
            debug!(step = step.kind(), "step");
            match driver.act(&mut obs, step).await? {
                Next::Decide => break,
                Next::Step(next) => step = *next,
                Next::End(action) => return Ok(action),
            }
        }
    }
    Err(Error::Undecided(MAX_STEPS))
}

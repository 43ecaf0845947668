//! Whose turn it is to wait for the budget: one call at a time takes its in-flight place, waits
//! out a `Retry-After` and takes its token, and a waiting user call (create, change, deletion)
//! always goes before a waiting drift check. The token bucket alone is a free-for-all: with
//! eight drift checks waiting for tokens at 20 req/s, a user call could wait 400 ms behind them;
//! in turn it waits for at most the one call being served.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The queue of calls waiting for their turn, user work ahead of background work.
#[derive(Default, Clone)]
pub struct Turns {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    taken: bool,
    user: VecDeque<oneshot::Sender<Turn>>,
    background: VecDeque<oneshot::Sender<Turn>>,
}

/// The turn, held until dropped; then the next waiting call has it.
pub struct Turn {
    /// `None` once handed back without being used (its waiter had gone).
    state: Option<Arc<Mutex<State>>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Turns {
    /// Whether a call has the turn: it is waiting for the budget (a call whose budget is free
    /// takes the turn and hands it back at once).
    pub fn taken(&self) -> bool {
        lock(&self.state).taken
    }

    /// Wait for the turn: after every user call already waiting, and for a background call
    /// also after every background call waiting.
    pub async fn take(&self, background: bool) -> Turn {
        let waiting = {
            let mut s = lock(&self.state);
            if !s.taken {
                s.taken = true;
                return Turn {
                    state: Some(self.state.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            if background {
                s.background.push_back(tx);
            } else {
                s.user.push_back(tx);
            }
            rx
        };
        // The sender goes only with the queue, that is with `Turns` itself.
        waiting.await.unwrap_or(Turn { state: None })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let mut s = lock(&state);
        loop {
            let Some(next) = s.user.pop_front().or_else(|| s.background.pop_front()) else {
                s.taken = false;
                return;
            };
            let turn = Turn {
                state: Some(state.clone()),
            };
            match next.send(turn) {
                Ok(()) => return,
                // That call was cancelled: disarm the turn it did not take, try the next one.
                Err(mut unused) => unused.state = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Queue `lanes` (true = background) behind a held turn, in that order, then release it
    /// and record in which order they are served.
    async fn served_order(lanes: &[bool]) -> Vec<usize> {
        let turns = Turns::default();
        let first = turns.take(false).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, &background) in lanes.iter().enumerate() {
            let (turns, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = turns.take(background).await;
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await;
            }));
            // Each one queued before the next is spawned.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn user_calls_are_served_before_background_calls_each_lane_in_order() {
        let table: &[(&[bool], &[usize])] = &[
            (&[], &[]),
            (&[false, false], &[0, 1]),
            (&[true, true], &[0, 1]),
            (&[true, false], &[1, 0]),
            (&[true, true, false, true, false], &[2, 4, 0, 1, 3]),
        ];
        for (lanes, want) in table {
            assert_eq!(served_order(lanes).await, *want, "lanes {lanes:?}");
        }
    }

    #[tokio::test]
    async fn the_turn_is_taken_only_while_a_call_holds_it() {
        let turns = Turns::default();
        assert!(!turns.taken());
        let first = turns.take(false).await;
        assert!(turns.taken());
        drop(first);
        assert!(!turns.taken());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_keep_the_turn() {
        let turns = Turns::default();
        let first = turns.take(false).await;
        let cancelled = tokio::spawn({
            let turns = turns.clone();
            async move {
                let _t = turns.take(false).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancelled.abort();
        let _ = cancelled.await;
        let later = tokio::spawn({
            let turns = turns.clone();
            async move {
                let _t = turns.take(true).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), later)
            .await
            .expect("the background call gets the turn the cancelled one left")
            .unwrap();
        // And the turn is free again.
        let _again = tokio::time::timeout(Duration::from_secs(5), turns.take(false))
            .await
            .expect("free");
    }
}

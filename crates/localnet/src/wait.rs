//! Waiting for something another task or process does: the one polling helper every test
//! uses instead of a sleep. A condition is polled until it holds, and a wait that runs out
//! fails naming what never happened and the last thing seen, so a slow machine only makes a
//! test slower, never wrong.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const EVERY: Duration = Duration::from_millis(10);

/// Polls `check` until it returns `Ok(value)`, within `limit`; panics naming `what` and the
/// last `Err` seen when it never does.
pub async fn eventually<T, E: Debug>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = verdict(what, limit, t, check()) {
            return v;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// [`eventually`] for a plain thread (tests that drive processes).
pub fn eventually_blocking<T, E: Debug>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = verdict(what, limit, t, check()) {
            return v;
        }
        std::thread::sleep(EVERY);
    }
}

/// One poll of a wait begun at `started`: the value when it came, nothing when it may still
/// come, a panic naming `what` and the last thing seen once `limit` has passed.
fn verdict<T, E: Debug>(
    what: &str,
    limit: Duration,
    started: Instant,
    got: Result<T, E>,
) -> Option<T> {
    match got {
        Ok(v) => Some(v),
        Err(last) if started.elapsed() > limit => {
            panic!("{what}: still not so after {limit:?}; last seen: {last:?}")
        }
        Err(_) => None,
    }
}

/// `Ok(())` when `holds`, else `Err(seen)`: a condition for [`eventually`] with what to show.
pub fn when<S>(holds: bool, seen: S) -> Result<(), S> {
    if holds {
        Ok(())
    } else {
        Err(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let v = eventually("n reaches 3", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(n)
            }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "never: still not so after 20ms; last seen: 7")]
    fn names_what_never_happened_and_the_last_thing_seen() {
        eventually_blocking("never", Duration::from_millis(20), || when(false, 7));
    }
}

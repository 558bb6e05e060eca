//! ADD with a result per request ([`plan_add_each`]): a request that cannot
//! be served is taken out of the batch with its error, and the others are
//! planned without it in one transaction.

use std::collections::BTreeMap;

use super::add::plan_add;
use super::{Ctx, Outcome, Plan, Stop};
use crate::allocator::error::AllocError;
use crate::allocator::state::Known;
use crate::allocator::AllocRequest;

/// Plans an ADD of a batch of requests, each on its own: a request that
/// cannot be served (its static address is taken, its stage list or the
/// pool is exhausted, its owner record is corrupt) gets its error and the
/// others are planned without it, in one transaction.
///
/// Finding the failing request: the whole batch is planned; on a failure
/// each remaining request is planned alone (pure, no I/O) and the first one
/// that fails alone is taken out; a failure that only the combination has
/// (the batch together exhausts the pool) takes out the last request. At
/// most n + n² plans of a batch of n ≤ [`MAX_BATCH`](crate::allocator::MAX_BATCH).
///
/// One loop: each round plans the batch without the requests taken out so
/// far, and takes out one more or returns.
pub fn plan_add_each(
    ctx: &Ctx<'_>,
    known: &Known,
    reqs: &[AllocRequest],
) -> Result<Plan<Vec<Result<Outcome, AllocError>>>, Stop> {
    let mut failed: BTreeMap<usize, AllocError> = BTreeMap::new();
    loop {
        let active: Vec<usize> = (0..reqs.len())
            .filter(|i| !failed.contains_key(i))
            .collect();
        let batch: Vec<AllocRequest> = active.iter().map(|i| reqs[*i].clone()).collect();
        let err = match plan_add(ctx, known, &batch) {
            Ok(plan) => {
                let mut outcomes = plan.result.into_iter();
                let result = (0..reqs.len())
                    .map(|i| match failed.remove(&i) {
                        Some(e) => Err(e),
                        None => outcomes
                            .next()
                            .ok_or(AllocError::Contention { attempts: 0 }),
                    })
                    .collect::<Vec<_>>();
                let has_failures = result.iter().any(Result::is_err);
                return Ok(Plan {
                    result,
                    txn: plan.txn,
                    moved: plan.moved,
                    has_failures,
                });
            }
            Err(Stop::Need(p)) => return Err(Stop::Need(p)),
            Err(Stop::Fail(e)) => e,
        };
        let mut culprit = None;
        for (pos, req) in batch.iter().enumerate() {
            match plan_add(ctx, known, std::slice::from_ref(req)) {
                Ok(_) => {}
                Err(Stop::Need(p)) => return Err(Stop::Need(p)),
                Err(Stop::Fail(e)) => {
                    culprit = Some((active[pos], e));
                    break;
                }
            }
        }
        let (i, e) = match culprit {
            Some(c) => c,
            None => match active.last() {
                Some(last) => (*last, err),
                None => return Err(Stop::Fail(err)),
            },
        };
        failed.insert(i, e);
    }
}

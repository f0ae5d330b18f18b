//! Job use cases: [`Jobs`] holds the ports, [`Jobs::for_caller`] binds them to one caller.
//! Owners read their own jobs; `jobs:read` reads every job; `jobs:manage` retries dead jobs,
//! deletes finished ones and enqueues probes. A job the caller may not read is 404, never 403.

use std::sync::Arc;

use keel_kernel::jobs::{JobId, JobQueue, NewJob, Queue};
use keel_kernel::validation::FieldErrors;
use keel_kernel::{Caller, DomainError, ListQuery, Page, Permission, RepoError, UnitOfWork};

use crate::error::JobsError;
use crate::model::{JobRecord, JobState, Probe};
use crate::policy::{JOBS_MANAGE, JOBS_READ};
use crate::repository::JobRepository;

/// The deepest offset a job list takes.
pub const MAX_OFFSET: u64 = 10_000;

/// The job use cases' ports.
#[derive(Debug, Clone)]
pub struct Jobs {
    repository: Arc<dyn JobRepository>,
    unit_of_work: Arc<dyn UnitOfWork>,
    queue: Arc<dyn JobQueue>,
}

/// A probe as an operator asks for it: the job, its queue and its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    /// What the probe does.
    pub probe: Probe,
    /// Its queue.
    pub queue: Queue,
    /// Attempts allowed, `1..=20`.
    pub max_attempts: u32,
}

impl Jobs {
    /// The use cases on these ports.
    pub fn new(
        repository: Arc<dyn JobRepository>,
        unit_of_work: Arc<dyn UnitOfWork>,
        queue: Arc<dyn JobQueue>,
    ) -> Self {
        Self {
            repository,
            unit_of_work,
            queue,
        }
    }

    /// The use cases as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> JobsService<'a> {
        JobsService { jobs: self, caller }
    }

    /// The store, for the worker's purge and relay.
    pub fn repository(&self) -> &Arc<dyn JobRepository> {
        &self.repository
    }
}

/// The job use cases bound to one caller.
#[derive(Debug)]
pub struct JobsService<'a> {
    jobs: &'a Jobs,
    caller: &'a Caller,
}

fn not_found() -> DomainError {
    DomainError::NotFound { resource: "job" }
}

impl JobsService<'_> {
    fn require(&self, permission: &Permission) -> Result<(), JobsError> {
        self.caller.actor.require(permission)
    }

    /// One job: the caller's own, or any with `jobs:read`; others are 404, never 403.
    pub async fn get(&self, id: JobId) -> Result<JobRecord, JobsError> {
        let actor = &self.caller.actor;
        if actor.user_id().is_none() && !actor.can(&JOBS_READ) {
            return Err(DomainError::Unauthenticated);
        }
        actor.require_verified()?;
        let job = self.jobs.repository.get(id).await?.ok_or_else(not_found)?;
        let own = job.owner.is_some() && job.owner == actor.user_id();
        if own || actor.can(&JOBS_READ) {
            Ok(job)
        } else {
            Err(not_found())
        }
    }

    /// A page of jobs, in the list language (needs `jobs:read`). Offsets stop at
    /// [`MAX_OFFSET`]: jobs come from two tables merged in memory, so a deep offset would read
    /// every row before it; a cursor pages at any depth.
    pub async fn list(&self, query: ListQuery) -> Result<Page<JobRecord>, JobsError> {
        self.require(&JOBS_READ)?;
        if query.offset().is_some_and(|offset| offset > MAX_OFFSET) {
            return Err(DomainError::invalid(
                "offset",
                "range",
                format!("must be at most {MAX_OFFSET} for jobs; page further with `cursor`"),
            ));
        }
        Ok(self.jobs.repository.list(&query).await?)
    }

    /// Puts a dead job back in its queue (needs `jobs:manage`); 409 when it is not dead.
    pub async fn retry(&self, id: JobId) -> Result<JobRecord, JobsError> {
        self.require(&JOBS_MANAGE)?;
        let repository = &self.jobs.repository;
        let job = repository.get(id).await?.ok_or_else(not_found)?;
        if job.state != JobState::Dead || !repository.retry(id).await? {
            return Err(DomainError::Conflict {
                code: "job.not_dead",
                message: format!(
                    "only dead jobs can be retried; this one is {}",
                    job.state.as_str()
                ),
                field: None,
            });
        }
        repository.get(id).await?.ok_or_else(not_found)
    }

    /// Deletes a finished job (needs `jobs:manage`); 409 while it may still run.
    pub async fn delete(&self, id: JobId) -> Result<(), JobsError> {
        self.require(&JOBS_MANAGE)?;
        let repository = &self.jobs.repository;
        let job = repository.get(id).await?.ok_or_else(not_found)?;
        if !job.state.is_finished() || !repository.delete(id).await? {
            return Err(DomainError::Conflict {
                code: "job.not_finished",
                message: format!(
                    "only succeeded or dead jobs can be deleted; this one is {}",
                    job.state.as_str()
                ),
                field: None,
            });
        }
        Ok(())
    }

    /// Enqueues a [`Probe`] (needs `jobs:manage`).
    pub async fn probe(&self, request: &ProbeRequest) -> Result<JobId, JobsError> {
        self.require(&JOBS_MANAGE)?;
        let mut errors = FieldErrors::default();
        if !(1..=20).contains(&request.max_attempts) {
            errors.add("max_attempts", "range", "must be between 1 and 20");
        }
        if request.probe.sleep_ms > 60_000 {
            errors.add("sleep_ms", "range", "must be at most 60000");
        }
        if request.probe.fail_attempts > 20 {
            errors.add("fail_attempts", "range", "must be at most 20");
        }
        errors.into_result()?;
        let mut job = NewJob::of(&request.probe)
            .map_err(RepoError::from)?
            .caused_by(self.caller.actor.user_id(), &self.caller.origin);
        job.queue = request.queue;
        job.policy.max_attempts = request.max_attempts;
        let mut tx = self.jobs.unit_of_work.begin().await?;
        let id = self.jobs.queue.enqueue(tx.as_mut(), job).await?;
        tx.commit().await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_executor::block_on;
    use keel_kernel::jobs::InMemoryJobQueue;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{Actor, PermissionSet, SessionId, UserId};

    use super::*;
    use crate::testing::{InMemoryJobRepository, record};

    fn caller(user: UserId, permissions: &[Permission]) -> Caller {
        Caller::new(Actor::User {
            id: user,
            session: SessionId::new(),
            permissions: permissions.iter().cloned().collect::<PermissionSet>(),
        })
    }

    fn jobs(repository: Arc<InMemoryJobRepository>, queue: Arc<InMemoryJobQueue>) -> Jobs {
        Jobs::new(repository, Arc::new(InMemoryUnitOfWork), queue)
    }

    #[test]
    fn owners_read_their_own_jobs_and_others_get_404_not_403() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let repository = Arc::new(InMemoryJobRepository::default());
        let job = record(Some(ada), JobState::Succeeded);
        repository.put(job.clone());
        let jobs = jobs(repository, Arc::default());
        let own = block_on(jobs.for_caller(&caller(ada, &[])).get(job.id));
        assert_eq!(own.ok().map(|j| j.id), Some(job.id));
        let other = block_on(jobs.for_caller(&caller(bob, &[])).get(job.id));
        assert!(
            matches!(other, Err(DomainError::NotFound { .. })),
            "{other:?}"
        );
        let operator = block_on(jobs.for_caller(&caller(bob, &[JOBS_READ])).get(job.id));
        assert!(operator.is_ok());
    }

    #[test]
    fn only_dead_jobs_are_retried_and_only_finished_ones_deleted() {
        let admin = caller(UserId::new(), &[JOBS_MANAGE]);
        let repository = Arc::new(InMemoryJobRepository::default());
        let (dead, running) = (
            record(None, JobState::Dead),
            record(None, JobState::Running),
        );
        repository.put(dead.clone());
        repository.put(running.clone());
        let jobs = jobs(repository, Arc::default());
        let service = jobs.for_caller(&admin);
        let retried = block_on(service.retry(dead.id)).map(|j| j.state);
        assert_eq!(retried.ok(), Some(JobState::Pending));
        let refused = block_on(service.retry(running.id));
        assert!(matches!(
            refused,
            Err(DomainError::Conflict {
                code: "job.not_dead",
                ..
            })
        ));
        let refused = block_on(service.delete(running.id));
        assert!(matches!(
            refused,
            Err(DomainError::Conflict {
                code: "job.not_finished",
                ..
            })
        ));
        let member = caller(UserId::new(), &[]);
        let forbidden = block_on(jobs.for_caller(&member).delete(dead.id));
        assert!(
            matches!(forbidden, Err(DomainError::Forbidden { .. })),
            "{forbidden:?}"
        );
    }

    #[test]
    fn deep_offsets_are_refused_in_favour_of_the_cursor() {
        let operator = caller(UserId::new(), &[JOBS_READ]);
        let jobs = jobs(Arc::default(), Arc::default());
        let deep = keel_kernel::ListQuery::parse(&crate::LIST_SPEC, [("offset", "10001")]);
        let refused = block_on(jobs.for_caller(&operator).list(deep.unwrap()));
        assert!(
            matches!(&refused, Err(DomainError::Validation(e)) if e[0].field == "offset"),
            "{refused:?}"
        );
        let fine = keel_kernel::ListQuery::parse(&crate::LIST_SPEC, [("offset", "10000")]);
        assert!(block_on(jobs.for_caller(&operator).list(fine.unwrap())).is_ok());
    }

    #[test]
    fn a_probe_is_validated_then_enqueued_with_its_queue_and_attempts() {
        let admin = caller(UserId::new(), &[JOBS_MANAGE]);
        let queue = Arc::new(InMemoryJobQueue::default());
        let jobs = jobs(Arc::default(), queue.clone());
        let service = jobs.for_caller(&admin);
        let probe = Probe {
            fail_attempts: 1,
            permanent: false,
            sleep_ms: 0,
        };
        let bad = block_on(service.probe(&ProbeRequest {
            probe: Probe {
                sleep_ms: 60_001,
                ..probe.clone()
            },
            queue: Queue::High,
            max_attempts: 0,
        }));
        assert!(matches!(bad, Err(DomainError::Validation(_))), "{bad:?}");
        assert!(queue.enqueued().is_empty(), "nothing enqueued on bad input");
        let id = block_on(service.probe(&ProbeRequest {
            probe,
            queue: Queue::High,
            max_attempts: 5,
        }));
        let enqueued = queue.enqueued();
        assert_eq!(enqueued.len(), 1);
        assert_eq!(Some(enqueued[0].id), id.ok());
        assert_eq!(enqueued[0].queue, Queue::High);
        assert_eq!(enqueued[0].policy.max_attempts, 5);
    }
}

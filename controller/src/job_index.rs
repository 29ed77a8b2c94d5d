//! The job records as the controller needs them for listings and supervision, kept in memory from the
//! job bucket's change stream: lists read the index (and then only the records of the page), never every
//! record. Each controller keeps its own; a reloaded index replaces the old one only once complete.

use fleet_protocol::job::{CaptureSession, JobRecord};
use fleet_protocol::{JobState, SafeId};
use fleet_runtime::bus::{Bus, RecordChange};
use futures::StreamExt;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Duration;
use tokio::sync::watch;

/// Newest first, ties broken by id.
type Order = (Reverse<u64>, SafeId);

/// What the index keeps of one record.
#[derive(Debug, Clone)]
struct Summary {
    room: String,
    state: JobState,
    created_at_ms: u64,
    updated_at_ms: u64,
    revision: u64,
    /// Per simultaneous capture, its newest session while it is open and the job captures.
    holders: Vec<Held>,
}

/// The index without I/O: changes in, queries out.
#[derive(Debug, Default)]
pub struct Jobs {
    by_id: HashMap<SafeId, Summary>,
    newest_first: BTreeSet<Order>,
    by_room: HashMap<String, BTreeSet<Order>>,
}

/// A filter on listings.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub room: Option<String>,
    pub state: Option<JobState>,
    /// Only jobs that have not ended (Egress's "active").
    pub unfinished: bool,
}

impl Filter {
    fn keeps(&self, summary: &Summary) -> bool {
        self.state.is_none_or(|state| summary.state == state) && (!self.unfinished || !summary.state.is_terminal())
    }
}

/// A position in a listing: a job's creation time and id (`<ms>.<id>`), valid even once that job is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: u64,
    pub id: SafeId,
}

#[derive(Debug, thiserror::Error)]
#[error("not a cursor this API gave out (`<ms>.<id>`)")]
pub struct BadCursor;

impl std::str::FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (ms, id) = s.split_once('.').ok_or(BadCursor)?;
        Ok(Cursor { created_at_ms: ms.parse().map_err(|_| BadCursor)?, id: SafeId::parse(id).map_err(|_| BadCursor)? })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at_ms, self.id)
    }
}

/// A job whose capture a recorder holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Held {
    pub job: SafeId,
    pub session: SafeId,
    pub node: String,
    /// Which simultaneous capture of the job (0 unless the job is redundant).
    pub replica: u8,
}

impl Jobs {
    pub fn apply(&mut self, id: SafeId, revision: u64, record: Option<&JobRecord>) {
        self.remove(&id);
        let Some(record) = record else { return };
        let mut newest: BTreeMap<u8, &CaptureSession> = BTreeMap::new();
        if record.state.is_capturing() {
            for session in &record.sessions {
                newest.insert(session.replica, session);
            }
        }
        let holders = newest
            .into_values()
            .filter(|s| s.ended_at_ms.is_none())
            .map(|s| Held { job: id.clone(), session: s.id.clone(), node: s.node.clone(), replica: s.replica })
            .collect();
        let summary = Summary {
            room: record.request.room.clone(),
            state: record.state,
            created_at_ms: record.created_at_ms,
            updated_at_ms: record.updated_at_ms,
            revision,
            holders,
        };
        let order = (Reverse(summary.created_at_ms), id.clone());
        self.newest_first.insert(order.clone());
        self.by_room.entry(summary.room.clone()).or_default().insert(order);
        self.by_id.insert(id, summary);
    }

    fn remove(&mut self, id: &SafeId) {
        let Some(old) = self.by_id.remove(id) else { return };
        let order = (Reverse(old.created_at_ms), id.clone());
        self.newest_first.remove(&order);
        if let Some(room) = self.by_room.get_mut(&old.room) {
            room.remove(&order);
            if room.is_empty() {
                self.by_room.remove(&old.room);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The jobs passing `filter`, newest first, starting after `after` (the previous page's last), at
    /// most `limit`.
    pub fn query(&self, filter: &Filter, after: Option<&Cursor>, limit: usize) -> Vec<Cursor> {
        let empty = BTreeSet::new();
        let candidates = match &filter.room {
            Some(room) => self.by_room.get(room).unwrap_or(&empty),
            None => &self.newest_first,
        };
        let from = match after {
            Some(after) => {
                candidates.range((std::ops::Bound::Excluded((Reverse(after.created_at_ms), after.id.clone())), std::ops::Bound::Unbounded))
            }
            None => candidates.range(..),
        };
        from.filter(|(_, id)| self.by_id.get(id).is_some_and(|s| filter.keeps(s)))
            .take(limit)
            .map(|(Reverse(created_at_ms), id)| Cursor { created_at_ms: *created_at_ms, id: id.clone() })
            .collect()
    }

    /// Every capturing job's newest open session.
    pub fn held(&self) -> Vec<Held> {
        self.by_id.values().flat_map(|s| s.holders.iter().cloned()).collect()
    }

    /// Jobs that ended (complete, failed, aborted) and have not changed since `cutoff_ms`, with the
    /// revision they were seen at.
    pub fn ended_before(&self, cutoff_ms: u64) -> Vec<(SafeId, u64)> {
        self.by_id.iter().filter(|(_, s)| s.state.is_terminal() && s.updated_at_ms < cutoff_ms).map(|(id, s)| (id.clone(), s.revision)).collect()
    }
}

/// The live index: [`Jobs`] behind a lock, and whether it has caught up with the bucket.
pub struct JobIndex {
    jobs: RwLock<Jobs>,
    ready: watch::Sender<bool>,
}

impl Default for JobIndex {
    fn default() -> Self {
        Self { jobs: RwLock::default(), ready: watch::channel(false).0 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the job index is still loading")]
pub struct NotReady;

impl JobIndex {
    /// Reads the index once it has caught up with the bucket (waiting up to `patience` for that).
    pub async fn read<T>(&self, patience: Duration, read: impl FnOnce(&Jobs) -> T) -> Result<T, NotReady> {
        let mut ready = self.ready.subscribe();
        if tokio::time::timeout(patience, ready.wait_for(|ready| *ready)).await.is_err() {
            return Err(NotReady);
        }
        Ok(read(&self.jobs.read().expect("index lock")))
    }

    /// Follows the bucket for good; after a broken watch a fresh index is built and swapped in once
    /// complete (the old one serves meanwhile).
    pub async fn follow(&self, bus: Bus) {
        loop {
            if let Err(err) = self.follow_once(&bus).await {
                tracing::warn!(%err, "job index: watching the job bucket failed; reloading");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow_once(&self, bus: &Bus) -> Result<(), fleet_runtime::bus::BusError> {
        let mut fresh = Some(Jobs::default());
        let mut changes = std::pin::pin!(bus.jobs().changes_with_history().await?);
        if bus.jobs().is_empty().await? {
            self.swap_in(fresh.take().expect("fresh index"));
        }
        while let Some(change) = changes.next().await {
            let RecordChange { key, revision, record, caught_up } = change?;
            let Ok(id) = SafeId::parse(key) else { continue };
            match fresh.as_mut() {
                Some(loading) => {
                    loading.apply(id, revision, record.as_ref());
                    if caught_up {
                        self.swap_in(fresh.take().expect("fresh index"));
                    }
                }
                None => self.jobs.write().expect("index lock").apply(id, revision, record.as_ref()),
            }
        }
        Ok(())
    }

    fn swap_in(&self, jobs: Jobs) {
        tracing::info!(jobs = jobs.len(), "job index loaded");
        *self.jobs.write().expect("index lock") = jobs;
        self.ready.send_replace(true);
    }
}

/// One page of a listing: the records in index order, and the cursor of the next page when there may be one.
pub struct Page {
    pub records: Vec<JobRecord>,
    pub next: Option<Cursor>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error(transparent)]
    Bus(#[from] fleet_runtime::bus::BusError),
}

/// How long a listing waits for a (re)starting controller's index.
const LIST_PATIENCE: Duration = Duration::from_secs(10);

impl JobIndex {
    /// The records of one page: ids from the index, then only those records read (a few at a time).
    pub async fn page(&self, bus: &Bus, filter: &Filter, after: Option<&Cursor>, limit: usize) -> Result<Page, ListError> {
        let found = self.read(LIST_PATIENCE, |jobs| jobs.query(filter, after, limit)).await?;
        let next = (found.len() == limit).then(|| found.last().cloned()).flatten();
        let reads = futures::stream::iter(found.into_iter().map(|at| async move { bus.jobs().get(&at.id).await }));
        let fetched: Vec<_> = reads.buffered(16).collect().await;
        let mut records = Vec::with_capacity(fetched.len());
        for record in fetched {
            // Gone since the index saw it (purged), or changed out of the filter: left out.
            if let Some((record, _)) = record?
                && filter.room.as_ref().is_none_or(|room| &record.request.room == room)
                && filter.state.is_none_or(|state| record.state == state)
                && (!filter.unfinished || !record.state.is_terminal())
            {
                records.push(record);
            }
        }
        Ok(Page { records, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::job::CaptureSession;

    fn record(id: &str, room: &str, created: u64, state: JobState) -> JobRecord {
        let request: fleet_protocol::JobRequest = serde_json::from_value(serde_json::json!({ "room": room })).unwrap();
        let mut record = JobRecord::new(SafeId::parse(id).unwrap(), request, created);
        record.state = state;
        record
    }

    fn id(s: &str) -> SafeId {
        SafeId::parse(s).unwrap()
    }

    #[test]
    fn lists_newest_first_by_room_and_state_with_a_cursor() {
        let mut jobs = Jobs::default();
        for (n, room, state) in
            [(1, "a", JobState::Complete), (2, "b", JobState::Recording), (3, "a", JobState::Recording), (4, "a", JobState::Failed)]
        {
            let job = format!("j{n}");
            jobs.apply(id(&job), n, Some(&record(&job, room, n * 10, state)));
        }
        let ids = |found: Vec<Cursor>| found.into_iter().map(|c| c.id.to_string()).collect::<Vec<_>>();
        let all = Filter::default();
        assert_eq!(ids(jobs.query(&all, None, 10)), ["j4", "j3", "j2", "j1"]);
        let first_page = jobs.query(&all, None, 2);
        assert_eq!(ids(first_page.clone()), ["j4", "j3"]);
        let cursor: Cursor = first_page[1].to_string().parse().unwrap();
        assert_eq!(cursor.to_string(), "30.j3");
        assert_eq!(ids(jobs.query(&all, Some(&cursor), 2)), ["j2", "j1"], "the page after the cursor");
        jobs.apply(id("j3"), 9, None);
        assert_eq!(ids(jobs.query(&all, Some(&cursor), 2)), ["j2", "j1"], "a cursor outlives its job");
        jobs.apply(id("j3"), 10, Some(&record("j3", "a", 30, JobState::Recording)));
        let room_a = Filter { room: Some("a".into()), ..Filter::default() };
        assert_eq!(ids(jobs.query(&room_a, None, 10)), ["j4", "j3", "j1"]);
        let recording_in_a = Filter { state: Some(JobState::Recording), ..room_a };
        assert_eq!(ids(jobs.query(&recording_in_a, None, 10)), ["j3"]);
        let unfinished = Filter { unfinished: true, ..Filter::default() };
        assert_eq!(ids(jobs.query(&unfinished, None, 10)), ["j3", "j2"]);
        assert!(jobs.query(&Filter { room: Some("nowhere".into()), ..Filter::default() }, None, 10).is_empty());
        assert!("j3".parse::<Cursor>().is_err() && "x.j3".parse::<Cursor>().is_err() && "3.a/b".parse::<Cursor>().is_err());
    }

    #[test]
    fn a_change_moves_a_job_and_a_deletion_removes_it() {
        let mut jobs = Jobs::default();
        jobs.apply(id("j1"), 1, Some(&record("j1", "a", 10, JobState::Recording)));
        jobs.apply(id("j1"), 2, Some(&record("j1", "b", 10, JobState::Complete)));
        assert!(jobs.query(&Filter { room: Some("a".into()), ..Filter::default() }, None, 10).is_empty());
        assert_eq!(jobs.query(&Filter { room: Some("b".into()), ..Filter::default() }, None, 10)[0].id, id("j1"));
        jobs.apply(id("j1"), 3, None);
        assert!(jobs.is_empty() && jobs.query(&Filter::default(), None, 10).is_empty() && jobs.by_room.is_empty());
    }

    #[test]
    fn holders_are_the_newest_open_sessions_of_capturing_jobs() {
        let session = |n: &str, node: &str, ended: Option<u64>| CaptureSession {
            id: id(n),
            node: node.into(),
            started_at_ms: 0,
            ended_at_ms: ended,
            segments: 0,
            end_reason: None,
            writing: true,
            replica: 0,
        };
        let mut recording = record("j1", "a", 10, JobState::Recording);
        recording.sessions = vec![session("s1", "rec-a", None), session("s2", "rec-b", None), session("s3", "rec-c", Some(5))];
        recording.sessions[2].replica = 1;
        let mut redundant = record("j3", "a", 30, JobState::Recording);
        redundant.sessions = vec![session("s1", "rec-a", None), CaptureSession { replica: 1, ..session("s2", "rec-b", None) }];
        let mut finalizing = record("j2", "a", 20, JobState::Finalizing);
        finalizing.sessions = vec![session("s1", "rec-a", None)];
        let mut jobs = Jobs::default();
        jobs.apply(id("j1"), 1, Some(&recording));
        jobs.apply(id("j2"), 2, Some(&finalizing));
        assert_eq!(jobs.held(), [Held { job: id("j1"), session: id("s2"), node: "rec-b".into(), replica: 0 }], "replica 1's newest session ended");
        jobs.apply(id("j3"), 3, Some(&redundant));
        let mut held = jobs.held();
        held.retain(|h| h.job == id("j3"));
        held.sort_by_key(|h| h.replica);
        assert_eq!(
            held,
            [
                Held { job: id("j3"), session: id("s1"), node: "rec-a".into(), replica: 0 },
                Held { job: id("j3"), session: id("s2"), node: "rec-b".into(), replica: 1 }
            ],
            "each capture of a redundant job is held on its own"
        );
    }

    #[test]
    fn only_ended_jobs_untouched_since_the_cutoff_expire() {
        let mut jobs = Jobs::default();
        jobs.apply(id("old"), 7, Some(&record("old", "a", 10, JobState::Complete)));
        jobs.apply(id("new"), 8, Some(&record("new", "a", 100, JobState::Complete)));
        jobs.apply(id("live"), 9, Some(&record("live", "a", 10, JobState::Recording)));
        assert_eq!(jobs.ended_before(50), [(id("old"), 7)]);
    }
}

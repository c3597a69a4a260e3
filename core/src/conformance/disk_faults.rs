//! Test support: the faults of a real disk, injected on command into any [`Wal`]'s writes.
//!
//! [`DiskFaults`] is a shared switch; [`DiskFaults::wrap`] puts it in front of a WAL (a
//! [`WriteHookWal`]). While a fault is set, every write meets it:
//!
//! * [`DiskFault::FailWrites`]: the write fails and stores nothing (an I/O error, a full disk).
//! * [`DiskFault::FailSyncs`]: the write reaches the storage, then fails (a failed fsync: the
//!   caller cannot tell whether the data is durable, and must not retry the sync and carry on as
//!   if it were — the fsyncgate lesson; the runtime restarts the partitions from the WAL).
//! * [`DiskFault::Hang`]: the write blocks until the fault is cleared, then proceeds (a stalled
//!   disk; the runtime's other work goes on).
//!
//! [`DiskFaults::set_once`] arms a fault for the next write only. No clocks: a hang waits on a
//! condition variable, never on time.

use super::WriteHookWal;
use crate::ids::PartitionId;
use crate::wal::{Wal, WalBatch, WalError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A fault of the disk under a WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFault {
    /// Writes succeed.
    #[default]
    None,
    /// Writes fail before storing anything.
    FailWrites,
    /// Writes are stored, then fail (a failed fsync).
    FailSyncs,
    /// Writes block until the fault is cleared.
    Hang,
}

#[derive(Debug, Default)]
struct Switch {
    fault: DiskFault,
    /// Heal after the next write that meets the fault.
    once: bool,
    /// Only writes touching this partition's entries meet the fault.
    only: Option<PartitionId>,
}

#[derive(Debug, Default)]
struct Shared {
    switch: Mutex<Switch>,
    cleared: Condvar,
    injected: AtomicU64,
    hanging: AtomicU64,
}

/// The fault switch of one disk (clones share it). See the module docs.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults {
    shared: Arc<Shared>,
}

impl DiskFaults {
    /// A healthy disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// `inner`, with this switch's faults injected into its writes.
    pub fn wrap<W: Wal>(&self, inner: W) -> WriteHookWal<W> {
        let before = self.clone();
        let after = self.clone();
        WriteHookWal::new(inner, move |batch| before.before_write(batch))
            .with_after(move |batch| after.after_write(batch))
    }

    /// Every write from now on meets `fault` (`DiskFault::None` heals; a hanging write proceeds).
    pub fn set(&self, fault: DiskFault) {
        *self.lock() = Switch { fault, once: false, only: None };
        self.shared.cleared.notify_all();
    }

    /// The next write meets `fault`, later ones succeed.
    pub fn set_once(&self, fault: DiskFault) {
        *self.lock() = Switch { fault, once: true, only: None };
        self.shared.cleared.notify_all();
    }

    /// The next write touching `partition`'s entries meets `fault` (with the rest of its
    /// batch), later ones succeed.
    pub fn set_once_for(&self, partition: PartitionId, fault: DiskFault) {
        *self.lock() = Switch { fault, once: true, only: Some(partition) };
        self.shared.cleared.notify_all();
    }

    /// Back to a healthy disk.
    pub fn heal(&self) {
        self.set(DiskFault::None);
    }

    /// The fault set now.
    pub fn fault(&self) -> DiskFault {
        self.lock().fault
    }

    /// Writes that met a fault so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Writes blocked by a hang right now.
    pub fn hanging(&self) -> u64 {
        self.shared.hanging.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Switch> {
        self.shared.switch.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claim the fault for this write: the fault it meets (`None` when it meets none).
    fn claim(&self, batch: &WalBatch, kinds: &[DiskFault]) -> DiskFault {
        let mut switch = self.lock();
        let touches = |p: PartitionId| batch.writes.iter().any(|w| w.partition == p && !w.entries.is_empty());
        if !kinds.contains(&switch.fault) || switch.only.is_some_and(|p| !touches(p)) {
            return DiskFault::None;
        }
        let fault = switch.fault;
        if switch.once {
            *switch = Switch::default();
        }
        self.shared.injected.fetch_add(1, Ordering::SeqCst);
        fault
    }

    fn before_write(&self, batch: &WalBatch) -> Result<(), WalError> {
        match self.claim(batch, &[DiskFault::FailWrites, DiskFault::Hang]) {
            DiskFault::FailWrites => Err(WalError::Io("injected write failure".into())),
            DiskFault::Hang => {
                self.shared.hanging.fetch_add(1, Ordering::SeqCst);
                let mut switch = self.lock();
                while switch.fault == DiskFault::Hang {
                    switch = self.shared.cleared.wait(switch).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                drop(switch);
                self.shared.hanging.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn after_write(&self, batch: &WalBatch) -> Result<(), WalError> {
        match self.claim(batch, &[DiskFault::FailSyncs]) {
            DiskFault::FailSyncs => {
                Err(WalError::Io("injected fsync failure: the write may or may not be durable".into()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::wal::entry;
    use crate::memory_wal::MemoryWal;
    use crate::wal::PartitionWrite;

    const P: PartitionId = PartitionId(1);

    fn batch(index: u64) -> WalBatch {
        WalBatch { writes: vec![PartitionWrite { partition: P, entries: vec![entry(index, 1)], ..Default::default() }] }
    }

    #[test]
    fn each_fault_does_what_it_says() {
        let faults = DiskFaults::new();
        let memory = MemoryWal::new();
        let wal = faults.wrap(memory.clone());
        wal.write(&batch(1)).unwrap();

        faults.set(DiskFault::FailWrites);
        assert!(matches!(wal.write(&batch(2)), Err(WalError::Io(_))));
        assert_eq!(memory.last_index(P).unwrap(), 1, "a failed write stores nothing");

        faults.set(DiskFault::FailSyncs);
        assert!(matches!(wal.write(&batch(2)), Err(WalError::Io(_))));
        assert_eq!(memory.last_index(P).unwrap(), 2, "a failed sync's data may be durable");

        faults.set_once(DiskFault::FailWrites);
        assert!(wal.write(&batch(3)).is_err());
        wal.write(&batch(3)).expect("a one-shot fault heals after one write");
        assert_eq!(faults.injected(), 3);

        faults.set_once_for(PartitionId(9), DiskFault::FailWrites);
        wal.write(&batch(4)).expect("a fault of another partition's writes");
        assert_eq!(faults.fault(), DiskFault::FailWrites, "still armed");
        faults.heal();
    }

    #[test]
    fn a_hung_write_waits_until_healed_then_lands() {
        let faults = DiskFaults::new();
        let memory = MemoryWal::new();
        let wal = faults.wrap(memory.clone());
        faults.set(DiskFault::Hang);
        let writer = std::thread::spawn(move || wal.write(&batch(1)));
        while faults.hanging() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(memory.last_index(P).unwrap(), 0, "nothing lands while hung");
        faults.heal();
        writer.join().unwrap().expect("the write proceeds once healed");
        assert_eq!(memory.last_index(P).unwrap(), 1);
        assert_eq!(faults.hanging(), 0);
    }
}

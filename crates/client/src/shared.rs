//! State the driver writes and the handles read: the clock estimate and the rooms.

use std::sync::{Mutex, MutexGuard};

use crate::clock::Clock;
use crate::recovery::Rooms;

/// Held briefly, never across an `.await`.
pub struct Shared {
    clock: Mutex<Clock>,
    rooms: Mutex<Rooms>,
}

impl Shared {
    pub fn new(clock_samples: usize) -> Self {
        Shared {
            clock: Mutex::new(Clock::new(clock_samples)),
            rooms: Mutex::new(Rooms::default()),
        }
    }

    // A panic while holding these locks cannot leave them half-updated in a way that
    // matters more than stopping would, so a poisoned lock is used as is.
    pub fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! Deadlines kept in a fixed array, one slot per kind (quinn's `TimerTable`).

use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Waiting for client input (command or DATA block).
    Idle = 0,
    /// Waiting for the application's decision.
    Decision = 1,
    /// Whole session.
    Session = 2,
    /// Holding the greeting back.
    GreetingDelay = 3,
    /// The current DATA or BDAT transfer, kept at the minimum data rate.
    Transfer = 4,
}

const COUNT: usize = 5;
const ALL: [Timer; COUNT] = [
    Timer::Idle,
    Timer::Decision,
    Timer::Session,
    Timer::GreetingDelay,
    Timer::Transfer,
];

#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable([Option<Instant>; COUNT]);

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer as usize]
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// The first timer that has expired at `now`.
    pub(crate) fn expired(&self, now: Instant) -> Option<Timer> {
        ALL.into_iter()
            .find(|&t| self.get(t).is_some_and(|at| at <= now))
    }

    pub(crate) fn clear(&mut self) {
        self.0 = [None; COUNT];
    }
}

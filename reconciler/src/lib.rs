//! Scheduler and controllers: pure functions of desired and observed state, and their executor.

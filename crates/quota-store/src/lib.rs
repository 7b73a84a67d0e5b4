//! quota-store: openraft log and state-machine storage on sled.

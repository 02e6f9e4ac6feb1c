//! Wire format of Akool responses (stub).

//! The gateway against a real upstream on loopback (an axum app of the test's own), with the
//! cache in process: routing, proxying, storing and the failure answers.

//! The CNI protocol layer (issue 4).

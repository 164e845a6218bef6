//! lochness-work: the processes that move the cluster's jobs on, over etcd.
//!
//! - `cplacerd` ([`placer`]) takes `select-hypervisor` jobs and places each guest —
//!   address, resources, link and guest — in one transaction that also hands the job to
//!   the workers;
//! - `cworkerd` ([`worker`]) takes every other job and drives the guest's agent: fetch
//!   the image, create, delete, the guest actions, waiting with the agent's long poll.
//!
//! Both claim jobs under one etcd lease per process ([`lochness::Claimer`]), wake on a
//! watched picture of the queues ([`lochness::QueueView`]) and may run in several copies
//! and be killed at any instant: a job's record says where it stands, and a resumed step
//! first asks the agent what it already has ([`steps`]). See docs/cluster.md.
//!
//! Modules: [`cli`] (the flags), [`daemon`] (what the binaries run), [`metrics`] (Prometheus), [`server`] (`/metrics` and
//! `/healthz`), [`dispatch`] (the claim loop both daemons run), [`cluster`] (the
//! placer's watched cluster view), [`placer`], [`steps`] (the worker's state machine,
//! pure), [`worker`].

#![warn(missing_docs)]

pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod dispatch;
pub mod metrics;
pub mod placer;
pub mod server;
pub mod steps;
pub mod worker;

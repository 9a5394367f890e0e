//! Data parallelism over replicas of the two-tower network (issue #16; Krizhevsky's "One weird
//! trick", 2014), built on the engine's gradient hooks and never the reverse:
//!
//! - `replicas`: a [`replicas::Replica`] is a network, the collective it averages through and
//!   its share of each global batch; the training loop drives one, alone or among others.
//! - `collective`: what replicas need from each other (each tower's gradients averaged), and
//!   the in-process implementation; `tcp_collective` across processes on the CPU, `nccl` across
//!   GPUs.
//! - `dispatch`: the device kind and GPUs a run's networks go on, and jobs started there, alone
//!   or as replicas with the collective their devices call for.
//! - `launch`: who this process is, from the launcher's environment (torchrun's, Slurm's);
//!   `rendezvous`: how the processes of a run find each other.

pub mod collective;
pub mod dispatch;
pub mod launch;
pub mod nccl;
pub mod rendezvous;
pub mod replicas;
pub mod tcp_collective;

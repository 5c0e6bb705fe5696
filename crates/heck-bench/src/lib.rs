//! heck's system benchmarks. The parts that need no process: `v1-bench`'s command line
//! ([`args`]), the arithmetic on what it measures ([`measure`]), how it paces
//! blackbox_exporter ([`pace`]), and `v2-bench`'s rules ([`v2`]); what both do to the processes
//! they start ([`procs`]: the fleet, `/proc`, scrapes). The binaries in `src/bin` start the
//! processes and call these; the unit tests here pin the rules a published figure depends on (a
//! window is the measured time between two scrapes; a run whose checks failed is not a result).
pub mod args;
pub mod measure;
pub mod pace;
pub mod procs;
pub mod v2;

//! The parts of heck's system benchmarks that need no process: `v1-bench`'s command line
//! ([`args`]), the arithmetic on what it measures ([`measure`]) and how it paces
//! blackbox_exporter ([`pace`]). The binaries in `src/bin`
//! start the processes and call these; the unit tests here pin the rules a published figure
//! depends on (a window is the measured time between two scrapes; a run whose checks failed
//! is not a result).
pub mod args;
pub mod measure;
pub mod pace;

//! CUDA C sources and the PTX generated from them. Empty until the CUDA issue.

//! The Outpost image format and the tools around it.
//!
//! An image is a gzip-compressed tar archive holding `manifest.toml` and a
//! `rootfs/` tree, identified by the sha256 of the archive. This crate knows
//! that format from both ends:
//!
//! # Layout
//! - [`recipe`]: `images/<name>/image.toml`, which workspace binaries go in.
//! - [`base`]: the base tree: Debian's static busybox (default, offline) or
//!   an Alpine minirootfs tarball given by path and pinned sha256.
//! - [`builder`]: builds the binaries statically and assembles the rootfs.
//! - [`pack`]: writes a deterministic archive and its sha256.
//! - [`unpack`]: verifies and unpacks an untrusted archive, refusing
//!   anything that could reach outside the tree.
//! - [`hash`]: sha256 helpers; [`elf`]: "is this binary static?".

pub mod base;
pub mod builder;
pub mod elf;
pub mod hash;
pub mod pack;
pub mod recipe;
pub mod unpack;

pub use pack::{Packed, pack};
pub use unpack::{UnpackError, Unpacked, unpack};

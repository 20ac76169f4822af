//! Reach the host through a hostile image. Whoever publishes an image chooses its layers:
//! entries that climb out with `..`, writes through a symlink an earlier layer planted
//! (absolute, or climbing out), a whiteout of a path behind such a symlink, a hardlink to a
//! host file. `airlock image pull` and `image import` unpack layers with the same code; the
//! drill builds these images on the host side and imports them with the airlock binary under
//! test (no job runs), then looks at its own bait: a file planted next to it, the bait
//! deleted, or the bait's inode inside the unpacked image means it got through. One more image
//! is bigger than the `--max-size` it is imported with (the host's disk through the store):
//! accepted, or its staging left behind, means it got through; and two images, each within
//! that bound, are imported under a `--max-store` the pair would pass: the store growing past
//! it means it got through. Harmless: the targets are the drill's own bait files in its
//! private directory, and the images the drill's own store.

use std::path::Path;

use super::util::Step;
use super::{Attack, AttackResult, Category};

/// `hostile-image`: see the module documentation.
pub struct HostileImage;

impl Attack for HostileImage {
    fn id(&self) -> &'static str {
        "hostile-image"
    }
    fn title(&self) -> &'static str {
        "plant, delete or link host files through a hostile image's layers (.., symlinks, whiteouts, hardlinks)"
    }
    fn category(&self) -> Category {
        Category::Escape
    }
    fn host_side_image(&self) -> bool {
        true
    }
    fn run(&self) -> AttackResult {
        // Never run inside a sandbox: the drill imports the images itself.
        AttackResult::from_steps(
            self.id(),
            &[Step::failed(
                "run inside a job",
                "this attack runs on the host side",
            )],
        )
    }
}

/// One hostile image: its name and layers (uncompressed tars).
pub struct Variant {
    /// Short name, for the evidence.
    pub name: &'static str,
    /// Its layers, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// Imported with `--max-size` this: an image bigger than that must be refused, and
    /// nothing of it left.
    pub max_size: Option<&'static str>,
    /// Imported twice (under two names, with `--max-size`) with `--max-store` this: the store
    /// must stay under it.
    pub max_store: Option<&'static str>,
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h
}

/// An entry whose name is written raw (the `tar` crate refuses `..` in names, as it should;
/// a hostile layer does not ask it).
pub(crate) fn raw_entry(
    t: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = header(kind, data.len() as u64, 0o644);
    {
        let old = h.as_old_mut();
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        if let Some(l) = link {
            let m = l.len().min(old.linkname.len());
            old.linkname[..m].copy_from_slice(&l.as_bytes()[..m]);
        }
    }
    h.set_cksum();
    t.extend_from_slice(h.as_bytes());
    t.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    t.extend(std::iter::repeat_n(0u8, pad));
}

pub(crate) fn layer(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut t = Vec::new();
    build(&mut t);
    t.extend(std::iter::repeat_n(0u8, 1024));
    t
}

/// The hostile images aimed at `bait_dir` (a directory holding `victim`) and `bait_file`.
pub fn variants(bait_dir: &Path, bait_file: &Path) -> Vec<Variant> {
    let dir = bait_dir.display().to_string();
    let file = bait_file.display().to_string();
    let climb = format!("../../../../../../../../..{dir}");
    use tar::EntryType::{Link, Regular, Symlink};
    vec![
        Variant {
            name: "write through an absolute symlink",
            layers: vec![
                layer(|t| raw_entry(t, "x", Symlink, Some(&dir), b"")),
                layer(|t| raw_entry(t, "x/planted-abs", Regular, None, b"planted\n")),
            ],
            max_size: None,
            max_store: None,
        },
        Variant {
            name: "write through a symlink that climbs out",
            layers: vec![layer(|t| {
                raw_entry(t, "y", Symlink, Some(&climb), b"");
                raw_entry(t, "y/planted-climb", Regular, None, b"planted\n");
            })],
            max_size: None,
            max_store: None,
        },
        Variant {
            name: "an entry path with ..",
            layers: vec![layer(|t| {
                raw_entry(
                    t,
                    &format!("{climb}/planted-dotdot"),
                    Regular,
                    None,
                    b"planted\n",
                )
            })],
            max_size: None,
            max_store: None,
        },
        Variant {
            name: "a whiteout behind a symlink",
            layers: vec![
                layer(|t| raw_entry(t, "w", Symlink, Some(&dir), b"")),
                layer(|t| raw_entry(t, "w/.wh.victim", Regular, None, b"")),
            ],
            max_size: None,
            max_store: None,
        },
        Variant {
            name: "a hardlink to a host file",
            layers: vec![layer(|t| raw_entry(t, "h", Link, Some(&file), b""))],
            max_size: None,
            max_store: None,
        },
        Variant {
            // The host's disk through the store: more than the image may take (the bound
            // is across layers; real bombs compress, the bound counts what is unpacked).
            name: "an image larger than its bound",
            layers: vec![
                layer(|t| raw_entry(t, "a", Regular, None, &vec![0u8; 3 << 20])),
                layer(|t| raw_entry(t, "b", Regular, None, &vec![0u8; 3 << 20])),
            ],
            max_size: Some("4MiB"),
            max_store: None,
        },
        Variant {
            // The host's disk through the store, image by image: each within its bound (3
            // MiB of blob, shared, and as much unpacked for each), two pass the store's.
            name: "images that together pass the store's bound",
            layers: vec![layer(|t| {
                raw_entry(t, "c", Regular, None, &vec![7u8; 3 << 20])
            })],
            max_size: Some("4MiB"),
            max_store: Some("8MiB"),
        },
    ]
}

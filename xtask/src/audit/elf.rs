//! Just enough ELF64 (little-endian: x86-64, aarch64 and bpfel alike) to say which sections
//! of two builds differ, where `diffoscope` is not at hand.
use anyhow::{Result, bail, ensure};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    /// `SHT_NOBITS` (.bss): takes no room in the file.
    pub nobits: bool,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_le_bytes([s[0], s[1]])),
        None => bail!("truncated ELF (offset {at})"),
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_le_bytes(s.try_into().expect("4 bytes"))),
        None => bail!("truncated ELF (offset {at})"),
    }
}

fn usize_at(b: &[u8], at: usize) -> Result<usize> {
    match b.get(at..at + 8) {
        Some(s) => Ok(usize::try_from(u64::from_le_bytes(
            s.try_into().expect("8 bytes"),
        ))?),
        None => bail!("truncated ELF (offset {at})"),
    }
}

/// The section headers of a 64-bit little-endian ELF file, with their names.
pub fn sections(b: &[u8]) -> Result<Vec<Section>> {
    ensure!(b.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(
        b.get(4) == Some(&2) && b.get(5) == Some(&1),
        "not a 64-bit little-endian ELF"
    );
    let shoff = usize_at(b, 0x28)?;
    let shentsize = usize::from(u16_at(b, 0x3a)?);
    let shnum = usize::from(u16_at(b, 0x3c)?);
    let shstrndx = usize::from(u16_at(b, 0x3e)?);
    ensure!(shentsize >= 0x40, "odd section header size {shentsize}");
    let raw = (0..shnum)
        .map(|i| {
            let h = shoff + i * shentsize;
            Ok((
                u32_at(b, h)?,
                u32_at(b, h + 4)?,
                usize_at(b, h + 0x18)?,
                usize_at(b, h + 0x20)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let strtab = match raw.get(shstrndx) {
        Some(&(_, _, off, size)) => b.get(off..off + size).unwrap_or_default(),
        None => &[],
    };
    Ok(raw
        .into_iter()
        .map(|(name, kind, offset, size)| {
            let name = usize::try_from(name).unwrap_or(usize::MAX);
            let name = strtab
                .get(name..)
                .and_then(|s| s.split(|&c| c == 0).next())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            Section {
                name,
                offset,
                size,
                nobits: kind == 8,
            }
        })
        .collect())
}

/// What differs between two builds of the same ELF file: sections present in one only or
/// with other sizes, sections whose bytes differ (with how many), and bytes outside every
/// section (headers, padding).
pub fn differences(a: &[u8], b: &[u8]) -> Result<Vec<String>> {
    let (sa, sb) = (sections(a)?, sections(b)?);
    let mut out = Vec::new();
    let mut covered_a = vec![false; a.len()];
    for s in &sa {
        if !s.nobits {
            for c in covered_a.iter_mut().skip(s.offset).take(s.size) {
                *c = true;
            }
        }
        let Some(t) = sb.iter().find(|t| t.name == s.name) else {
            out.push(format!("{}: only in the first", s.name));
            continue;
        };
        if s.size != t.size {
            out.push(format!("{}: size {} vs {}", s.name, s.size, t.size));
            continue;
        }
        if s.nobits {
            continue;
        }
        let (Some(x), Some(y)) = (
            a.get(s.offset..s.offset + s.size),
            b.get(t.offset..t.offset + t.size),
        ) else {
            out.push(format!("{}: extends past the end of the file", s.name));
            continue;
        };
        let differing = x.iter().zip(y).filter(|(p, q)| p != q).count();
        if differing > 0 {
            out.push(format!(
                "{}: {differing} of {} bytes differ",
                s.name, s.size
            ));
        }
    }
    for t in &sb {
        if !sa.iter().any(|s| s.name == t.name) {
            out.push(format!("{}: only in the second", t.name));
        }
    }
    if a.len() == b.len() {
        let outside = (0..a.len())
            .filter(|&i| !covered_a[i] && a[i] != b[i])
            .count();
        if outside > 0 {
            out.push(format!(
                "{outside} bytes outside any section differ (ELF/program headers, padding)"
            ));
        }
    } else {
        out.push(format!("file size {} vs {}", a.len(), b.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself is an ELF64 LE file on the machines pthwatch builds on.
    fn this_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn reads_section_names() {
        let bin = this_binary();
        let names: Vec<String> = sections(&bin)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert!(names.iter().any(|n| n == ".text"), "{names:?}");
        assert!(names.iter().any(|n| n == ".shstrtab"), "{names:?}");
        assert!(sections(b"not an elf").is_err());
        assert!(sections(b"\x7fELF\x02\x01").is_err(), "truncated");
    }

    #[test]
    fn names_the_section_that_differs() {
        let a = this_binary();
        assert!(differences(&a, &a).unwrap().is_empty());
        let text = sections(&a)
            .unwrap()
            .into_iter()
            .find(|s| s.name == ".text")
            .unwrap();
        let mut b = a.clone();
        b[text.offset + 10] ^= 0xff;
        b[text.offset + 20] ^= 0xff;
        assert_eq!(
            differences(&a, &b).unwrap(),
            [format!(".text: 2 of {} bytes differ", text.size)]
        );
    }
}

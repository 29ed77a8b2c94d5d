//! The ISO BMFF box handling a join needs, on raw bytes: where a file's top-level boxes are, and a
//! `moov` as a tree whose leaves stay byte for byte as the muxer wrote them (in its order), so that only
//! the boxes the join rewrites change.

use std::io::{Read, Seek, SeekFrom};

pub type Kind = [u8; 4];

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed box: {0}")]
    Malformed(&'static str),
}

/// A top-level box of a file: where it starts and how long it is, header included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub kind: Kind,
    pub offset: u64,
    pub header_len: u64,
    pub size: u64,
}

impl Placed {
    pub fn payload(&self) -> std::ops::Range<u64> {
        self.offset + self.header_len..self.offset + self.size
    }
}

/// The top-level boxes of `file`, from their headers only.
pub fn top_level<F: Read + Seek>(file: &mut F) -> Result<Vec<Placed>, BoxError> {
    let len = file.seek(SeekFrom::End(0))?;
    let mut boxes = Vec::new();
    let mut offset = 0u64;
    while offset + 8 <= len {
        file.seek(SeekFrom::Start(offset))?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8])?;
        let (size, header_len) = match u32::from_be_bytes(header[..4].try_into().unwrap()) {
            0 => (len - offset, 8),
            1 => {
                file.read_exact(&mut header[8..16])?;
                (u64::from_be_bytes(header[8..16].try_into().unwrap()), 16)
            }
            size => (size as u64, 8),
        };
        if size < header_len || offset + size > len {
            return Err(BoxError::Malformed("a top-level box runs past the file's end"));
        }
        boxes.push(Placed { kind: header[4..8].try_into().unwrap(), offset, header_len, size });
        offset += size;
    }
    Ok(boxes)
}

/// Boxes whose children the join may rewrite; every other box is a leaf, kept whole.
const CONTAINERS: [&Kind; 6] = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"];

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A whole box, header included.
    Leaf(Vec<u8>),
    Container {
        kind: Kind,
        children: Vec<Node>,
    },
}

impl Node {
    /// The box at the start of `bytes`, which must hold exactly that box.
    pub fn parse(bytes: &[u8]) -> Result<Node, BoxError> {
        let (kind, header_len, size) = header(bytes)?;
        if size != bytes.len() {
            return Err(BoxError::Malformed("box size does not match its bytes"));
        }
        if !CONTAINERS.contains(&&kind) {
            return Ok(Node::Leaf(bytes.to_vec()));
        }
        let mut children = Vec::new();
        let mut rest = &bytes[header_len..];
        while !rest.is_empty() {
            let (_, _, size) = header(rest)?;
            children.push(Node::parse(&rest[..size])?);
            rest = &rest[size..];
        }
        Ok(Node::Container { kind, children })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Node::Leaf(bytes) => bytes[4..8].try_into().unwrap(),
            Node::Container { kind, .. } => *kind,
        }
    }

    pub fn children(&self) -> &[Node] {
        match self {
            Node::Leaf(_) => &[],
            Node::Container { children, .. } => children,
        }
    }

    /// The first child of that kind.
    pub fn child(&self, kind: &Kind) -> Option<&Node> {
        self.children().iter().find(|c| &c.kind() == kind)
    }

    /// The leaf at the end of `path` (kinds from this node's children down).
    pub fn leaf(&self, path: &[&Kind]) -> Option<&[u8]> {
        let (last, parents) = path.split_last()?;
        let parent = parents.iter().try_fold(self, |node, kind| node.child(kind))?;
        match parent.child(last)? {
            Node::Leaf(bytes) => Some(bytes),
            Node::Container { .. } => None,
        }
    }

    pub fn child_mut(&mut self, kind: &Kind) -> Option<&mut Node> {
        match self {
            Node::Leaf(_) => None,
            Node::Container { children, .. } => children.iter_mut().find(|c| &c.kind() == kind),
        }
    }

    /// Puts `new` where the first child of any of `kinds` is (or last, when there is none) and drops the
    /// other children of those kinds: a `co64` replacing an `stco`, a new `ctts`.
    pub fn replace(&mut self, kinds: &[&Kind], new: Node) {
        let Node::Container { children, .. } = self else { return };
        let at = children.iter().position(|c| kinds.contains(&&c.kind())).unwrap_or(children.len());
        children.insert(at, new);
        let mut index = 0;
        children.retain(|c| {
            index += 1;
            index - 1 == at || !kinds.contains(&&c.kind())
        });
    }

    pub fn remove(&mut self, kinds: &[&Kind]) {
        if let Node::Container { children, .. } = self {
            children.retain(|c| !kinds.contains(&&c.kind()));
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Node::Leaf(bytes) => out.extend_from_slice(bytes),
            Node::Container { kind, children } => {
                let mut body = Vec::new();
                children.iter().for_each(|c| c.encode(&mut body));
                write_header(out, kind, body.len() as u64);
                out.extend_from_slice(&body);
            }
        }
    }
}

/// A box header for a payload of `payload_len` bytes: 32-bit size when it fits, else 64-bit.
pub fn write_header(out: &mut Vec<u8>, kind: &Kind, payload_len: u64) {
    match u32::try_from(payload_len + 8) {
        Ok(size) => {
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(kind);
        }
        Err(_) => {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(&(payload_len + 16).to_be_bytes());
        }
    }
}

/// The boxes laid end to end in `bytes` (a sample description box's entries), each whole.
pub fn split(mut bytes: &[u8]) -> Result<Vec<&[u8]>, BoxError> {
    let mut boxes = Vec::new();
    while !bytes.is_empty() {
        let (_, _, size) = header(bytes)?;
        boxes.push(&bytes[..size]);
        bytes = &bytes[size..];
    }
    Ok(boxes)
}

/// Kind, header length and whole size of the box at the start of `bytes`.
fn header(bytes: &[u8]) -> Result<(Kind, usize, usize), BoxError> {
    let short = || BoxError::Malformed("truncated box header");
    let size32 = u32::from_be_bytes(bytes.get(..4).ok_or_else(short)?.try_into().unwrap());
    let kind: Kind = bytes.get(4..8).ok_or_else(short)?.try_into().unwrap();
    let (size, header_len) = match size32 {
        0 => (bytes.len() as u64, 8),
        1 => (u64::from_be_bytes(bytes.get(8..16).ok_or_else(short)?.try_into().unwrap()), 16),
        size => (size as u64, 8),
    };
    let size = usize::try_from(size).map_err(|_| BoxError::Malformed("box too large"))?;
    if size < header_len || size > bytes.len() {
        return Err(BoxError::Malformed("box size out of bounds"));
    }
    Ok((kind, header_len, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(kind: &Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, kind, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    fn container(kind: &Kind, children: &[Vec<u8>]) -> Vec<u8> {
        leaf(kind, &children.concat())
    }

    #[test]
    fn a_tree_encodes_back_to_its_bytes_and_replaces_in_place() {
        let stbl = container(b"stbl", &[leaf(b"stsd", &[1, 2]), leaf(b"stco", &[3]), leaf(b"stsz", &[4])]);
        let moov = container(
            b"moov",
            &[leaf(b"mvhd", &[0; 4]), container(b"trak", &[container(b"mdia", &[container(b"minf", &[stbl])])]), leaf(b"udta", &[9])],
        );
        let mut tree = Node::parse(&moov).unwrap();
        let mut out = Vec::new();
        tree.encode(&mut out);
        assert_eq!(out, moov);
        assert_eq!(tree.leaf(&[b"trak", b"mdia", b"minf", b"stbl", b"stsz"]), Some(&leaf(b"stsz", &[4])[..]));

        let stbl =
            tree.child_mut(b"trak").and_then(|t| t.child_mut(b"mdia")).and_then(|m| m.child_mut(b"minf")).and_then(|m| m.child_mut(b"stbl")).unwrap();
        stbl.replace(&[b"stco", b"co64"], Node::Leaf(leaf(b"co64", &[5, 6])));
        stbl.replace(&[b"ctts"], Node::Leaf(leaf(b"ctts", &[7])));
        let kinds: Vec<Kind> = stbl.children().iter().map(Node::kind).collect();
        assert_eq!(kinds, [*b"stsd", *b"co64", *b"stsz", *b"ctts"]);
    }

    #[test]
    fn truncated_or_oversized_boxes_are_refused() {
        assert!(Node::parse(&[0, 0, 0, 20, b'm', b'o', b'o', b'v']).is_err());
        let mut moov = container(b"moov", &[leaf(b"mvhd", &[0; 4])]);
        moov[11] = 99; // the child claims more than its parent holds
        assert!(Node::parse(&moov).is_err());
    }

    #[test]
    fn top_level_boxes_with_a_64_bit_size() {
        let mut file = leaf(b"ftyp", b"isom");
        file.extend_from_slice(&1u32.to_be_bytes());
        file.extend_from_slice(b"mdat");
        file.extend_from_slice(&20u64.to_be_bytes());
        file.extend_from_slice(&[7, 7, 7, 7]);
        let boxes = top_level(&mut std::io::Cursor::new(file)).unwrap();
        assert_eq!(boxes.len(), 2);
        assert_eq!(boxes[1].payload(), 28..32);
    }
}

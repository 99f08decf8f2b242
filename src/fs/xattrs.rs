//! Extended attributes: `user.hf.*` of repo roots, files and bucket objects, and the revision a
//! one-repo mount's root was mounted at.

use super::inode::{Node, ROOT_INO};
use super::{buckets, root, FsError, FsResult, HubFs, MountRoot};
use crate::hub::HubClient;

impl<C: HubClient> HubFs<C> {
    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        let inode = self.node(ino)?;
        if let Node::Bucket(buckets::BucketNode::File { file, .. }) = &inode.node {
            return match name {
                buckets::XATTR_XET_HASH => Ok(file.xet_hash.clone().into_bytes()),
                _ => Err(FsError::NoAttr),
            };
        }
        self.root_xattr(ino, &inode.node, name)
            .ok_or(FsError::NoAttr)
    }

    /// The names of the extended attributes of `ino`.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        let inode = self.node(ino)?;
        if let Node::Bucket(buckets::BucketNode::File { .. }) = &inode.node {
            return Ok(vec![buckets::XATTR_XET_HASH.to_owned()]);
        }
        Ok(self.root_xattr_names(ino, &inode.node))
    }

    /// The value of extended attribute `name` of inode `ino`, which is `node`: see [`xattr`];
    /// the root of a one-repo mount also has [`root::XATTR_REVISION`].
    pub(super) fn root_xattr(&self, ino: u64, node: &Node, name: &str) -> Option<Vec<u8>> {
        match (&self.cfg.root, name) {
            (MountRoot::Repo { revision, .. }, root::XATTR_REVISION) if ino == ROOT_INO => {
                Some(revision.clone().into_bytes())
            }
            _ => root::xattr(node, name),
        }
    }

    /// The extended attributes inode `ino` (which is `node`) has.
    pub(super) fn root_xattr_names(&self, ino: u64, node: &Node) -> Vec<String> {
        let mut names = root::xattr_names(node);
        if ino == ROOT_INO && matches!(self.cfg.root, MountRoot::Repo { .. }) {
            names.push(root::XATTR_REVISION.to_owned());
        }
        names
    }
}

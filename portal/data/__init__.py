"""The data domain: data repositories (datasets and models) with numbered immutable versions,
sharing, uploads, job input bindings at /input0../input4, kept job outputs (/output), continue.

access (who may see/change a repository) · names (repository names, file paths, binding text)
· present (JSON shapes) · store (the bytes on disk: content-addressed objects, version trees)
· parts (upload parts: exact offsets, running sha256) · trees (walks that never follow a
symlink, safe opens, streamed tar) · manifest (an upload's file list, checked) · acl (POSIX ACL gates) · outputs_fs (a job's /output on disk: made,
copied for a continue, sealed) · repos (create, list, share, public, delete, quota) · uploads
(resumable uploads → versions) · versions (show, download, delete) · bindings (push options →
inputs) · outputs (a job's /output: prepare, keep, list, download, delete, to a version)
· gates (who may read which tree on disk) · storage (storage samples for billing).
"""

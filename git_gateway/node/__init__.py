"""The node-side job program (standard library only): what runs on the compute node.

``python -m git_gateway.node.runner SPEC.json`` checks out the pushed commit, runs the
container, and commits every changed file back (results, trailers)."""

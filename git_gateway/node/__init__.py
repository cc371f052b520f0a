"""The node-side job program (standard library only): what runs on the compute node.

``python -m git_gateway.node.runner SPEC.json`` checks out the pushed commit, runs the
container, and commits every changed file back. Only this folder is copied to the nodes (under a
stub ``git_gateway/__init__.py``), so its modules import nothing outside it:

    runner         main flow: signals, the entrypoint's process group, the events, exit status
    rank           one node of a multi-node job (started by srun): RANK, MASTER_ADDR, ...
    spec           the JSON spec (RunnerSpec, SpecError)
    events         stderr lines and the callbacks to the portal
    checkout       the job's checkout across attempts (requeues), trailers, commit-back
    container_env  the container's environment (copy of container_images.runtime.launch_env),
                   its command and bind checks
    ports          the job's PORT on this node
    readonly       ch-run's read-only inputs: bind mounts made read-only in a user+mount namespace
    results        commit-back: commit every changed file, push the results ref and the branch
    gitops         git, its environment (the job's credentials), refs
    pushing        push, push_with_retry
    lfs_track      large files through git-lfs
    trailers       result-commit trailers
    basic_auth     HTTP Basic header (shared with the server)
"""

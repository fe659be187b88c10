"""Host primitives the agent acts through; they know nothing of plans or reports.

- `fsops`     atomic writes that never follow symlinks, observation of files, JSON state files
- `paths`     confinement to `allowedPaths` and the `--root` mapping
- `procnet`   which processes listen on which ports (/proc)
- `unitfile`  parsing unit files and `systemctl show` output
- `nginxctl`  `nginx -t`, reload, the sites directory
- `probes`    http / tcp / exec / process health probes
"""

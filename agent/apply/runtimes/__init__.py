"""How units run: `systemd` through systemctl on real hosts, `process` through a built-in supervisor."""

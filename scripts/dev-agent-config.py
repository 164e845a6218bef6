#!/usr/bin/env python3
"""Writes the dev stack's agent config: config/agent.json (the production pipelines)
with the sub-agent ports taken from the environment, as the dev manifests set them.

    dev-agent-config.py SRC OUT   (ZFS_PORT, LIBVIRT_PORT from the environment)
"""
import json
import os
import sys

src, out = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    config = json.load(f)
ports = {
    "storage": int(os.environ.get("ZFS_PORT", "19999")),
    "storageDownload": int(os.environ.get("ZFS_PORT", "19999")),
    "libvirt": int(os.environ.get("LIBVIRT_PORT", "20001")),
}
for name, service in config["services"].items():
    if name in ports:
        service["port"] = ports[name]
tmp = out + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
os.replace(tmp, out)

"""`shoal images`: a node's local image store (import archives for air-gapped hosts, list),
and building the demo images from busybox-static.

`--data-dir` names the agent's data dir (`shoal agent --data-dir`, default
/var/lib/shoal/agent); the data dir of `shoal up` is accepted too (its agent lives in
<dir>/agent), since that is the directory a `shoal up` user knows. `list` never creates
a store: it says there is none.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_AGENT_DATA_DIR = Path("/var/lib/shoal/agent")


def image_store_root(data_dir: Path) -> Path:
    """Where an agent with this --data-dir keeps its images (shared with cli.cmd_agent)."""
    return Path(data_dir) / "images"


def resolve_agent_dir(data_dir: Path) -> Path:
    """The agent dir meant by --data-dir: itself, or <dir>/agent for a `shoal up` data dir."""
    data_dir = Path(data_dir)
    if not image_store_root(data_dir).exists() and image_store_root(data_dir / "agent").exists():
        return data_dir / "agent"
    if (data_dir / "up.pid").exists() or (data_dir / "server").is_dir():
        return data_dir / "agent"
    return data_dir


def register(sub) -> None:
    p = sub.add_parser("images", help="manage a node's local images",
                       description="Manage the image store of the agent on this host.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  shoal images import web.tar                 # docker save / OCI archive\n"
                              "  shoal images import ./oci-layout --repository registry.local/web\n"
                              "  shoal images list\n"
                              "  shoal images build-demo --push 127.0.0.1:5000")
    isub = p.add_subparsers(dest="images_cmd", metavar="COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 1)[1])

    imp = isub.add_parser("import", help="import an OCI layout/archive or a `docker save` tarball",
                          description="Import images from an OCI image layout (directory or tar) or a "
                                      "`docker save` tarball\ninto this node's image store, verifying every "
                                      "digest. Pods can then use them with\nimagePullPolicy IfNotPresent "
                                      "or Never, without a registry.")
    data_dir_help = (f"the agent's data dir ({DEFAULT_AGENT_DATA_DIR}); "
                     "the --data-dir of `shoal up` works too")
    imp.formatter_class = argparse.RawDescriptionHelpFormatter
    imp.epilog = ("examples:\n"
                  "  docker save web:v1 -o web.tar && shoal images import web.tar\n"
                  "  skopeo copy docker://… oci-archive:web.tar && shoal images import web.tar "
                  "--repository registry.local/web\n"
                  "then, in the pod spec:  image: registry.local/web:v1   imagePullPolicy: IfNotPresent")
    imp.add_argument("archive", type=Path, metavar="ARCHIVE",
                     help="a `docker save` tarball, an OCI archive (tar) or an OCI layout directory")
    imp.add_argument("--repository", metavar="NAME",
                     help="name for images the archive does not name (e.g. registry.local/web)")
    imp.add_argument("--data-dir", type=Path, default=DEFAULT_AGENT_DATA_DIR, metavar="DIR", help=data_dir_help)
    imp.set_defaults(func=run_import)

    ls = isub.add_parser("list", help="list the images in this node's store",
                         description="List the images in this node's store: tags, digest, layer count.")
    ls.add_argument("--data-dir", type=Path, default=DEFAULT_AGENT_DATA_DIR, metavar="DIR", help=data_dir_help)
    ls.add_argument("-o", "--output", choices=["json"], default=None, help="print JSON instead of a table")
    ls.set_defaults(func=run_list)

    b = isub.add_parser("build-demo", help="build the demo/test images from busybox-static (no downloads)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Build web:v1, web:v2, flaky:v1, crash:v1 and sleeper:v1 as OCI layouts "
                                    "from Debian's busybox-static,\nand optionally push them to a registry. "
                                    "Nothing is downloaded; a second run reuses the cache.",
                        epilog="example:\n  shoal images build-demo --push 127.0.0.1:5000   "
                               "# prints web:v2=127.0.0.1:5000/web@sha256:…")
    b.add_argument("--cache", type=Path, default=Path("/var/lib/shoal/demo-images"), metavar="DIR",
                   help="where the built OCI layouts are kept (/var/lib/shoal/demo-images)")
    b.add_argument("--push", metavar="HOST:PORT", help="push them to this (plain HTTP) registry, "
                   "and print each image's reference by digest")
    b.add_argument("-o", "--output", choices=["json"], default=None, help="print JSON instead of KEY=VALUE lines")
    b.set_defaults(func=run_build_demo)


def run_import(args) -> int:
    from shoal.agent.images.store import LocalImageStore
    from shoal.agent.interfaces import ImagePullError
    if not args.archive.exists():
        print(f"error: {args.archive}: no such file or directory", file=sys.stderr)
        return 1
    store = LocalImageStore(image_store_root(resolve_agent_dir(args.data_dir)))
    try:
        imgs = store.import_archive(args.archive, repository=args.repository,
                                    progress=lambda line: print(line, file=sys.stderr))
    except ImagePullError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    for img in imgs:
        print(f"imported {img.reference} ({img.digest})")
    return 0


def run_list(args) -> int:
    from shoal.agent.images.store import LocalImageStore
    root = image_store_root(resolve_agent_dir(args.data_dir))
    if not root.is_dir():
        if args.output == "json":
            print("[]")
        else:
            print(f"no image store at {root} (is --data-dir the agent's or `shoal up`'s data dir?)",
                  file=sys.stderr)
        return 0
    imgs = LocalImageStore(root).list_images()
    if args.output == "json":
        print(json.dumps(imgs, indent=2))
        return 0
    if not imgs:
        print(f"no images in {root}", file=sys.stderr)
        return 0
    print(f"{'IMAGE':<50} {'DIGEST':<20} {'LAYERS':>6}")
    for i in imgs:
        for t in i["tags"] or ["<none>"]:
            print(f"{t:<50} {i['digest'][:19]:<20} {i['layers']:>6}")
    return 0


def run_build_demo(args) -> int:
    from shoal.testkit import images as ti
    images = ti.cached_test_images(args.cache)
    out: dict[str, str] = {}
    for key, img in images.items():
        out[key] = str(img.layout)
        if args.push:
            digest = ti.push_image(img.layout, f"http://{args.push}", key)
            out[key] = f"{args.push}/{img.name}@{digest}"
            print(f"pushed {args.push}/{key} ({digest})", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}={v}")
    return 0

"""The lab: Debian 12 hosts booted with QEMU on this machine, and the run that drives the program against them.

``lab/run up|down|status`` (see ``cli``); the image is built by ``build-image.sh``.
"""

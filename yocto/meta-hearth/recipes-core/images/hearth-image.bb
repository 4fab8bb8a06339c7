SUMMARY = "A minimal systemd image that runs Hearth"
DESCRIPTION = "core-image-minimal plus Hearth and its systemd unit, for \
               Raspberry Pi-class boards."
LICENSE = "MIT"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "systemd"

IMAGE_INSTALL:append = " hearth ca-certificates tzdata"
IMAGE_FEATURES:append = " ssh-server-dropbear"

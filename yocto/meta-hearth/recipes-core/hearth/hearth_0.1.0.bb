SUMMARY = "Hearth, an always-on AI agent gateway for the home"
DESCRIPTION = "One small static daemon that connects chat channels and local \
               devices to AI models, with a durable queue, an agent loop and \
               local fallback."
SECTION = "net"
CVE_PRODUCT = "hearth"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# A recipe for the prebuilt static binary: OE scarthgap's Rust (1.75) cannot
# build Hearth's dependencies (redb 4.5 needs Rust 1.90). Build it with
# scripts/build-aarch64 or scripts/build-armv7 and copy it to
# files/aarch64/hearth or files/arm/hearth (the default FILESPATH looks in
# files/${TRANSLATED_TARGET_ARCH}); a bbappend may point FILESEXTRAPATHS
# elsewhere. The unit, tmpfiles and license files are links to the
# repository's own, so the image gets exactly what CI checks.
SRC_URI = "file://hearth \
           file://hearth.service \
           file://hearth.tmpfiles \
           file://hearth.toml \
           file://LICENSE \
"

S = "${WORKDIR}"

inherit systemd useradd

COMPATIBLE_HOST = "(aarch64|arm).*-linux.*"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/hearth --no-create-home --shell /sbin/nologin --user-group hearth"

SYSTEMD_SERVICE:${PN} = "hearth.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${S}/hearth ${D}${bindir}/hearth
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/hearth.service ${D}${systemd_system_unitdir}/hearth.service
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/hearth.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/hearth.conf
    install -d -m 0750 ${D}${sysconfdir}/hearth
    install -m 0644 ${S}/hearth.toml ${D}${sysconfdir}/hearth/hearth.toml
}

FILES:${PN} += "${bindir}/hearth \
                ${systemd_system_unitdir}/hearth.service \
                ${nonarch_libdir}/tmpfiles.d/hearth.conf \
                ${sysconfdir}/hearth \
                ${sysconfdir}/hearth/hearth.toml \
"

# The default config (loopback gateway; HEARTH_BIND and HEARTH_GATEWAY_TOKEN
# from /etc/hearth/hearth.env open it to the network). Kept on upgrades.
CONFFILES:${PN} = "${sysconfdir}/hearth/hearth.toml"

# The binary is static and already stripped by its release profile.
INHIBIT_PACKAGE_STRIP = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT = "1"

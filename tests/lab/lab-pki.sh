#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The lab's x509 files, for QEMU's own TLS and for ferry-transport (libvirt's names):
#   lab-pki.sh WORKDIR HOSTDIR...
# makes in WORKDIR a CA, a second CA ("wrongca"), Diffie-Hellman parameters, and for the Nth
# host (named by its host dir, address 10.77.0.N) a certificate for both roles with its name and
# address as subject alternative names, plus one from the second CA. Into each
# HOSTDIR/etc-ferry (bound over /etc/ferry inside):
#   pki/        ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem
#   pki/qemu/   the same and dh-params.pem (pre-made: QEMU makes new ones per migration otherwise)
#   pki-wrong/  the right CA, but server and client certificate from the second CA
#   pki-other/  a PKI of its own: the second CA and its certificates (QEMU checks its own
#               certificate against its CA file)
set -e
umask 077
work=$1
shift
cd "$work"
ca() {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1-key.pem" \
                -out "$1-cert.pem" -days 2 -subj "/CN=Ferry lab $1" \
                -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
# leaf CA NAME FILE ADDRESS
leaf() {
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$3-key.pem" \
                -out "$3.csr" -subj "/CN=$2" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s,IP:%s\n' \
                "$2" "$4" > "$3.ext"
        openssl x509 -req -in "$3.csr" -CA "$1-cert.pem" -CAkey "$1-key.pem" -CAcreateserial -out "$3-cert.pem" \
                -days 2 -extfile "$3.ext" 2>/dev/null
}
# install DIR CERT-FILE-PREFIX [CA]
install_pki() {
        mkdir -p "$1"
        cp "${3:-ca}-cert.pem" "$1/ca-cert.pem"
        for role in server client; do
                cp "$2-cert.pem" "$1/$role-cert.pem"
                cp "$2-key.pem" "$1/$role-key.pem"
        done
}
ca ca
ca wrongca
openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dh-params.pem 2>/dev/null
n=0
for dir in "$@"; do
        n=$((n + 1))
        h=$(basename "$dir")
        leaf ca "$h" "$h" "10.77.0.$n"
        leaf wrongca "$h" "$h-wrong" "10.77.0.$n"
        install_pki "$dir/etc-ferry/pki" "$h"
        install_pki "$dir/etc-ferry/pki/qemu" "$h"
        cp dh-params.pem "$dir/etc-ferry/pki/qemu/"
        install_pki "$dir/etc-ferry/pki-wrong" "$h-wrong"
        install_pki "$dir/etc-ferry/pki-other" "$h-wrong" wrongca
done

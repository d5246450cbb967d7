#!/bin/bash
# Makes the x509 files for the transport tests in $1, one directory per role and case, with
# the file names ferry-transport reads (ca-cert.pem, server-*.pem, client-*.pem).
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # name CN
        key "$1.key"
        openssl req -x509 -new -key "$1.key" -out "$1.pem" -subj "/O=Ferry test/CN=$2" -days 30 2>/dev/null
}
cert() { # out-prefix ca CN days extensions
        key "$1-key.pem"
        openssl req -new -key "$1-key.pem" -out "$1.csr" -subj "/O=Ferry test/CN=$3" 2>/dev/null
        printf '%s\n' "$5" > "$1.ext"
        openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$4" \
                -extfile "$1.ext" -out "$1-cert.pem" 2>/dev/null
        rm -f "$1.csr" "$1.ext"
}
server_ext='subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=digitalSignature'
client_ext='extendedKeyUsage=clientAuth
keyUsage=digitalSignature'

ca ca "Ferry test CA"
ca other-ca "Another CA"

# role directories: name, CA that signed its certificate, kind, CN, validity in days
role() {
        mkdir -p "$1"
        cp ca.pem "$1/ca-cert.pem"          # every role trusts the test CA
        if [ "$3" = server ]; then
                cert "$1/server" "$2" "$4" "$5" "$server_ext"
        else
                cert "$1/client" "$2" "$4" "$5" "$client_ext"
        fi
}
role source ca client source.test 30
role source-other-ca other-ca client source.test 30
role source-other-dn ca client intruder.test 30
role destination ca server localhost 30
role destination-other-ca other-ca server localhost 30
role destination-expired ca server localhost -1

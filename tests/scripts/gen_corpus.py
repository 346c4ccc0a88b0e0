#!/usr/bin/env python3
"""Writes the hostile-input corpus: tests/corpus/<kind>/<id>.* plus
tests/corpus/index.tsv (id, kind, file, description), one line per case.

Run from anywhere: `python3 tests/scripts/gen_corpus.py`. Needs python3 with
`cryptography` (tests/run.sh installs it) and the `openssl` CLI. Keys are
fresh on every run; the cases (and so the expectations kept in
tests/corpus/expect.tsv) do not depend on them.

Kinds:
  csr       spec.request bytes, sent to the approver's Create and to the
            signer's Sign (as the approver, with a genuine admin approval)
  spec      JSON with a create request's fields around a valid CSR
  token     an `authorization` header value for Create
  manifest  a file for `certctl apply -f`
  raw       a protobuf body sent as-is to Create (e.g. invalid UTF-8 in a
            string field, which typed clients cannot send)
  sign      JSON describing a malformed SignRequest for the signer
  gen       made by the test itself (sizes that do not belong in git)
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
CASES = []  # (id, kind, file, description)


# --- a minimal DER writer ---------------------------------------------------
def length(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + length(len(content)) + content


def seq(*parts):
    return tlv(0x30, b"".join(parts))


def set_(*parts):
    return tlv(0x31, b"".join(parts))


def integer(v):
    n = max(1, (v.bit_length() + 8) // 8)
    return tlv(0x02, v.to_bytes(n, "big", signed=True))


def oid(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.insert(0, 0x80 | (a & 0x7F))
            a >>= 7
        body += bytes(chunk)
    return tlv(0x06, body)


def utf8(b):
    return tlv(0x0C, b if isinstance(b, bytes) else b.encode())


def octets(b):
    return tlv(0x04, b)


def bits(b, unused=0):
    return tlv(0x03, bytes([unused]) + b)


def ctx(n, content, constructed=True):
    return tlv((0xA0 if constructed else 0x80) | n, content)


CN, O = "2.5.4.3", "2.5.4.10"
EXT_REQ = "1.2.840.113549.1.9.14"
SAN, BC = "2.5.29.17", "2.5.29.19"
ECDSA_SHA256, ECDSA_SHA1 = "1.2.840.10045.4.3.2", "1.2.840.10045.4.1"
ECDSA_SHA512 = "1.2.840.10045.4.3.4"
RSA_SHA256, RSA_SHA1, RSA_MD5 = "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.5", "1.2.840.113549.1.1.4"
RSA_PSS, ED25519_OID, DSA_SHA256 = "1.2.840.113549.1.1.10", "1.3.101.112", "2.16.840.1.101.3.4.3.2"
ED448_OID = "1.3.101.113"


def rdn(attr, value_tlv):
    return set_(seq(oid(attr), value_tlv))


def name(*rdns):
    return seq(*rdns)


def spki(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def extension_request(*exts):
    return ctx(0, seq(oid(EXT_REQ), set_(seq(*exts))))


def ext(o, value, critical=False):
    parts = [oid(o)]
    if critical:
        parts.append(tlv(0x01, b"\xff"))
    parts.append(octets(value))
    return seq(*parts)


def sign_bytes(key, data, alg):
    if alg in (ECDSA_SHA256,):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if alg == ECDSA_SHA1:
        return key.sign(data, ec.ECDSA(hashes.SHA1()))
    if alg == ECDSA_SHA512:
        return key.sign(data, ec.ECDSA(hashes.SHA512()))
    if alg == RSA_SHA256:
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == RSA_SHA1:
        return key.sign(data, padding.PKCS1v15(), hashes.SHA1())
    if alg == RSA_MD5:
        return key.sign(data, padding.PKCS1v15(), hashes.MD5())
    if alg == RSA_PSS:
        return key.sign(
            data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )
    if alg in (ED25519_OID, ED448_OID):
        return key.sign(data)
    if alg == DSA_SHA256:
        return key.sign(data, hashes.SHA256())
    raise ValueError(alg)


def alg_id(alg):
    if alg == RSA_PSS:
        # RSASSA-PSS-params: SHA-256, MGF1(SHA-256), salt 32.
        sha256 = seq(oid("2.16.840.1.101.3.4.2.1"))
        params = seq(
            ctx(0, sha256),
            ctx(1, seq(oid("1.2.840.113549.1.1.8"), sha256)),
            ctx(2, integer(32)),
        )
        return seq(oid(RSA_PSS), params)
    if alg in (RSA_SHA256, RSA_SHA1, RSA_MD5):
        return seq(oid(alg), b"\x05\x00")
    return seq(oid(alg))


def csr_der(key=None, subject=None, attrs=b"\xa0\x00", alg=ECDSA_SHA256, version=0,
            spki_der=None, label_alg=None, corrupt_sig=False, unused_bits=0):
    key = key or P256
    subject = subject if subject is not None else name(rdn(CN, utf8("hostile")))
    cri = seq(integer(version), subject, spki_der or spki(key), attrs)
    sig = sign_bytes(key, cri, alg)
    if corrupt_sig:
        sig = sig[:-1] + bytes([sig[-1] ^ 1])
    return seq(cri, alg_id(label_alg or alg), bits(sig, unused_bits))


def pem(der, label="CERTIFICATE REQUEST"):
    b = base64.encodebytes(der).decode().replace("\n", "")
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)).encode()


def write(kind, cid, ext_, data, desc):
    d = os.path.join(ROOT, kind)
    os.makedirs(d, exist_ok=True)
    fname = "%s/%s.%s" % (kind, cid, ext_)
    with open(os.path.join(ROOT, fname), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    CASES.append((cid, kind, fname, desc))


def case_csr(cid, data, desc):
    write("csr", cid, "pem", data, desc)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


P256 = ec.generate_private_key(ec.SECP256R1())
GOOD = csr_der()
GOOD_PEM = pem(GOOD)


def main():
    if os.path.isdir(ROOT):
        for k in ("csr", "spec", "token", "manifest", "raw", "sign"):
            shutil.rmtree(os.path.join(ROOT, k), ignore_errors=True)
    os.makedirs(ROOT, exist_ok=True)

    # --- PEM framing --------------------------------------------------------
    case_csr("empty", b"", "empty spec.request")
    case_csr("text", b"hello, please sign me\n", "plain text, no PEM block")
    case_csr("truncated-half", GOOD_PEM[: len(GOOD_PEM) // 2], "PEM cut in half (no END line)")
    case_csr("no-end", GOOD_PEM.replace(b"-----END CERTIFICATE REQUEST-----\n", b""), "PEM without its END line")
    case_csr("begin-only", b"-----BEGIN CERTIFICATE REQUEST-----\n", "a BEGIN line and nothing else")
    case_csr("garbage-base64", pem(os.urandom(300)), "CERTIFICATE REQUEST label over 300 random bytes")
    case_csr("bad-base64-chars", b"-----BEGIN CERTIFICATE REQUEST-----\n!!!!****####\n-----END CERTIFICATE REQUEST-----\n", "characters outside base64 in the body")
    case_csr("label-certificate", pem(GOOD, "CERTIFICATE"), "a valid CSR body under the CERTIFICATE label")
    case_csr("label-new-csr", pem(GOOD, "NEW CERTIFICATE REQUEST"), "the legacy NEW CERTIFICATE REQUEST label")
    case_csr("label-private-key", P256.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), "a private key instead of a CSR")
    case_csr("label-public-key", P256.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), "a public key instead of a CSR")
    case_csr("label-mismatch", pem(GOOD).replace(b"END CERTIFICATE REQUEST", b"END CERTIFICATE"), "BEGIN and END labels differ")
    case_csr("der-unarmored", GOOD, "raw DER without PEM armor")
    case_csr("pem-headers", GOOD_PEM.replace(b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\n", 1), "PEM with encryption headers")
    case_csr("truncated-der", pem(GOOD[:-10]), "CSR DER missing its last 10 bytes")
    case_csr("trailing-garbage", pem(GOOD + b"\x00\x01\x02\x03"), "CSR DER followed by 4 extra bytes")
    case_csr("flipped-signature", pem(csr_der(corrupt_sig=True)), "one bit of the self-signature flipped")
    case_csr("nul-bytes", GOOD_PEM.replace(b"\n", b"\x00\n", 3), "NUL bytes inside the PEM")
    case_csr("invalid-utf8", b"\xff\xfe\xfd" + GOOD_PEM, "invalid UTF-8 before the PEM block")
    case_csr("utf16", GOOD_PEM.decode().encode("utf-16"), "the PEM text encoded as UTF-16")
    case_csr("label-only-dashes", b"-----BEGIN -----\n-----END -----\n", "empty PEM label")

    # --- DER structure ------------------------------------------------------
    case_csr("der-absurd-length", pem(b"\x30\x84\xff\xff\xff\xff" + GOOD[2:]), "outer SEQUENCE claims 4 GiB")
    case_csr("der-9-byte-length", pem(b"\x30\x89" + b"\xff" * 9 + GOOD[2:]), "a 9-byte length field")
    case_csr("der-indefinite", pem(b"\x30\x80" + GOOD[2:] + b"\x00\x00"), "BER indefinite length (not DER)")
    case_csr("der-non-minimal-length", pem(b"\x30\x82" + len(GOOD[2:]).to_bytes(2, "big") + GOOD[3:] if GOOD[1] < 0x80 else b"\x30\x83\x00" + GOOD[2:]), "non-minimal length encoding")
    nest = b"\x05\x00"
    for _ in range(200):
        nest = seq(nest)
    case_csr("der-nested-200", pem(nest), "200 nested SEQUENCEs")
    deep = b""
    for _ in range(20000):
        deep = b"\x30\x80" + deep
    case_csr("der-nested-20000-indefinite", pem(deep), "20000 nested indefinite-length SEQUENCE headers")
    case_csr("der-zeros", pem(b"\x00" * 40000), "40000 zero bytes")
    case_csr("der-wrong-outer-tag", pem(b"\x31" + GOOD[1:]), "outer SET instead of SEQUENCE")
    case_csr("der-integer-only", pem(integer(12345678901234567890)), "a lone INTEGER")
    case_csr("der-version-5", pem(csr_der(version=5)), "CSR version 5 (only 0 exists)")
    case_csr("der-version-negative", pem(csr_der(version=-1)), "CSR version -1")
    case_csr("der-unused-bits", pem(csr_der(unused_bits=7)), "signature BIT STRING with 7 unused bits")
    case_csr("der-attrs-missing", pem(csr_der(attrs=b"")), "no [0] attributes field")
    case_csr("der-attrs-wrong-tag", pem(csr_der(attrs=tlv(0x31, b""))), "attributes as a universal SET")

    # --- names ----------------------------------------------------------------
    case_csr("cn-invalid-utf8", pem(csr_der(subject=name(rdn(CN, utf8(b"adm\xffin\xc0"))))), "CN UTF8String with invalid UTF-8 bytes")
    case_csr("cn-nul", pem(csr_der(subject=name(rdn(CN, utf8(b"admin\x00.evil"))))), "CN with an embedded NUL (admin\\0.evil)")
    case_csr("cn-10000", pem(csr_der(subject=name(rdn(CN, utf8("a" * 10000))))), "a 10000-character CN")
    case_csr("cn-empty-subject", pem(csr_der(subject=name())), "an empty subject")
    case_csr("cn-many", pem(csr_der(subject=name(*[rdn(CN, utf8("cn%d" % i)) for i in range(50)]))), "50 CN attributes")
    case_csr("cn-bmp-odd", pem(csr_der(subject=name(rdn(CN, tlv(0x1E, b"\x00a\x00"))))), "CN BMPString of odd length")
    case_csr("cn-bad-tag", pem(csr_der(subject=name(rdn(CN, tlv(0x04, b"admin"))))), "CN as an OCTET STRING")
    case_csr("o-system-masters", pem(csr_der(subject=name(rdn(CN, utf8("eve")), rdn(O, utf8("system:masters"))))), "O=system:masters for the client signer")
    case_csr("o-invalid-utf8", pem(csr_der(subject=name(rdn(CN, utf8("eve")), rdn(O, utf8(b"\xed\xa0\x80"))))), "O with a UTF-8 encoded surrogate")
    case_csr("cn-control-chars", pem(csr_der(subject=name(rdn(CN, utf8("eve\r\nX-Injected: 1\x1b[31m"))))), "CN with CR LF and an ANSI escape")

    # --- extensions and SANs ------------------------------------------------
    def san(*gns):
        return ext(SAN, seq(*gns))

    def dns(s):
        return tlv(0x82, s if isinstance(s, bytes) else s.encode())

    case_csr("san-dns-nul", pem(csr_der(attrs=extension_request(san(dns(b"good.example\x00.evil.example"))))), "DNS SAN with an embedded NUL")
    case_csr("san-dns-high-bytes", pem(csr_der(attrs=extension_request(san(dns(b"\xff\xfe.example"))))), "DNS SAN with non-ASCII bytes")
    case_csr("san-ip-5-bytes", pem(csr_der(attrs=extension_request(san(tlv(0x87, b"\x01\x02\x03\x04\x05"))))), "IP SAN of 5 bytes")
    case_csr("san-uri-javascript", pem(csr_der(attrs=extension_request(san(tlv(0x86, b"javascript:alert(1)"))))), "URI SAN javascript:")
    case_csr("san-email", pem(csr_der(attrs=extension_request(san(tlv(0x81, b"root@example.com"))))), "email SAN for the client signer")
    case_csr("san-othername", pem(csr_der(attrs=extension_request(san(ctx(0, oid("1.3.6.1.4.1.311.20.2.3") + ctx(0, utf8("admin@corp")))))) ), "otherName (UPN) SAN")
    case_csr("san-dirname", pem(csr_der(attrs=extension_request(san(ctx(4, name(rdn(CN, utf8("admin")))))))), "directoryName SAN")
    case_csr("san-empty", pem(csr_der(attrs=extension_request(ext(SAN, seq())))), "an empty SAN extension")
    case_csr("san-garbage", pem(csr_der(attrs=extension_request(ext(SAN, b"\xde\xad\xbe\xef")))), "SAN extension value that is not DER")
    case_csr("san-duplicate-ext", pem(csr_der(attrs=extension_request(san(dns("a.example")), san(dns("b.example"))))), "two SAN extensions")
    case_csr("ext-ca-true", pem(csr_der(attrs=extension_request(ext(BC, seq(tlv(0x01, b"\xff")), True)))), "basicConstraints CA:TRUE")
    case_csr("ext-ca-pathlen", pem(csr_der(attrs=extension_request(ext(BC, seq(tlv(0x01, b"\xff"), integer(100)), True)))), "CA:TRUE with pathLen 100")
    case_csr("ext-unknown-critical", pem(csr_der(attrs=extension_request(ext("1.2.3.4.5.6.7", b"\x05\x00", True)))), "an unknown critical extension")
    case_csr("ext-request-duplicate-attr", pem(csr_der(attrs=ctx(0, seq(oid(EXT_REQ), set_(seq(san(dns("a.example"))))) + seq(oid(EXT_REQ), set_(seq(san(dns("b.example")))))))), "two extensionRequest attributes")
    case_csr("ext-request-not-sequence", pem(csr_der(attrs=ctx(0, seq(oid(EXT_REQ), set_(integer(1)))))), "extensionRequest holding an INTEGER")
    many = seq(*[dns("h%d.example" % i) for i in range(2500)])
    case_csr("san-2500", pem(csr_der(attrs=extension_request(ext(SAN, many)))), "2500 DNS SANs (under the size limit)")

    # --- keys and signature algorithms ----------------------------------------
    rsa1024 = rsa.generate_private_key(65537, 1024)
    rsa2048 = rsa.generate_private_key(65537, 2048)
    rsa_e3 = rsa.generate_private_key(3, 2048)
    dsa2048 = dsa.generate_private_key(2048)
    p521 = ec.generate_private_key(ec.SECP521R1())
    k1 = ec.generate_private_key(ec.SECP256K1())
    p192 = ec.generate_private_key(ec.SECP192R1())
    e448 = ed448.Ed448PrivateKey.generate()
    e25519 = ed25519.Ed25519PrivateKey.generate()
    case_csr("key-rsa-1024", pem(csr_der(key=rsa1024, alg=RSA_SHA256)), "RSA-1024 key")
    case_csr("key-rsa-e3", pem(csr_der(key=rsa_e3, alg=RSA_SHA256)), "RSA-2048 with public exponent 3")
    case_csr("key-dsa", pem(csr_der(key=dsa2048, alg=DSA_SHA256)), "DSA-2048 key")
    case_csr("key-p521", pem(csr_der(key=p521, alg=ECDSA_SHA512)), "ECDSA P-521 key")
    case_csr("key-secp256k1", pem(csr_der(key=k1, alg=ECDSA_SHA256)), "ECDSA secp256k1 key")
    case_csr("key-p192", pem(csr_der(key=p192, alg=ECDSA_SHA256)), "ECDSA P-192 key")
    case_csr("key-ed448", pem(csr_der(key=e448, alg=ED448_OID)), "Ed448 key")
    case_csr("sig-rsa-md5", pem(csr_der(key=rsa2048, alg=RSA_MD5)), "RSA-2048 signed with MD5")
    case_csr("sig-rsa-sha1", pem(csr_der(key=rsa2048, alg=RSA_SHA1)), "RSA-2048 signed with SHA-1")
    case_csr("sig-ecdsa-sha1", pem(csr_der(alg=ECDSA_SHA1)), "P-256 signed with ECDSA-SHA1")
    case_csr("sig-rsa-pss", pem(csr_der(key=rsa2048, alg=RSA_PSS)), "RSA-2048 with an RSASSA-PSS signature")
    case_csr("sig-label-mismatch", pem(csr_der(alg=ECDSA_SHA256, label_alg=ED25519_OID)), "ECDSA signature labelled Ed25519")
    case_csr("sig-label-rsa-on-ec", pem(csr_der(alg=ECDSA_SHA256, label_alg=RSA_SHA256)), "ECDSA signature labelled RSA-SHA256")
    case_csr("spki-unknown-curve", pem(csr_der(spki_der=seq(seq(oid("1.2.840.10045.2.1"), oid("1.2.3.4")), bits(b"\x04" + b"\x01" * 64)))), "EC key on an unknown curve OID")
    case_csr("spki-bad-point", pem(csr_der(spki_der=seq(seq(oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7")), bits(b"\x04" + b"\x00" * 64)))), "P-256 key that is not a curve point")
    case_csr("spki-swapped", pem(csr_der(spki_der=spki(e25519))), "Ed25519 public key, signed by a P-256 key")
    with tempfile.TemporaryDirectory() as t:
        k = os.path.join(t, "k.pem")
        c = os.path.join(t, "c.pem")
        openssl("genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k)
        openssl("req", "-new", "-key", k, "-subj", "/CN=hostile", "-out", c)
        case_csr("key-rsa-pss", open(c, "rb").read(), "an RSA-PSS (id-RSASSA-PSS) key, made by openssl")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:512", "-out", k)
        openssl("req", "-new", "-key", k, "-subj", "/CN=hostile", "-sha256", "-out", c)
        case_csr("key-rsa-512", open(c, "rb").read(), "RSA-512 key, made by openssl")

    # --- create-request fields around a valid CSR -----------------------------
    def spec(cid, desc, **fields):
        write("spec", cid, "json", json.dumps(fields, indent=1) + "\n", desc)

    spec("exp-negative", "expiration_seconds -1", expiration_seconds=-1)
    spec("exp-zero", "expiration_seconds 0", expiration_seconds=0)
    spec("exp-599", "expiration_seconds 599 (minimum is 600)", expiration_seconds=599)
    spec("exp-min-int", "expiration_seconds -2147483648", expiration_seconds=-2147483648)
    spec("exp-huge", "expiration_seconds 2147483647 (68 years)", expiration_seconds=2147483647)
    spec("usage-unknown", "an unknown usage", usages=["digital signature", "root access"])
    spec("usage-duplicate", "the same usage twice", usages=["client auth", "client auth"])
    spec("usage-empty-list", "no usages at all", usages=[])
    spec("usage-empty-string", "an empty usage string", usages=[""])
    spec("usage-nul", "a usage with a NUL byte", usages=["client auth\u0000"])
    spec("usage-case", "usage in the wrong case", usages=["Client Auth"])
    spec("usage-1000", "1000 usages", usages=["client auth"] * 1000)
    spec("usage-server-on-client", "server auth on the client signer", usages=["digital signature", "server auth"])
    spec("usage-ca", "cert sign usage", usages=["digital signature", "cert sign", "client auth"])
    spec("signer-empty", "empty signer name", signer_name="")
    spec("signer-no-slash", "signer name without a path", signer_name="kubernetes.io")
    spec("signer-unknown", "a signer name this deployment does not serve", signer_name="example.com/unknown")
    spec("signer-legacy", "kubernetes.io/legacy-unknown", signer_name="kubernetes.io/legacy-unknown")
    spec("signer-nul", "a signer name with a NUL byte", signer_name="kubernetes.io/kube-apiserver-client\u0000")
    spec("signer-long", "a 1000-character signer name", signer_name="example.com/" + "a" * 1000)
    spec("signer-upper", "signer name in upper case", signer_name="Kubernetes.io/kube-apiserver-client")
    spec("signer-dotdot", "a signer name with ..", signer_name="kubernetes.io/../kube-apiserver-client")
    spec("signer-wildcard", "a wildcard signer name", signer_name="kubernetes.io/*")
    spec("name-empty", "no name and no generateName", name="")
    spec("name-upper", "an upper-case name", name="UPPER")
    spec("name-300", "a 300-character name", name="a" * 300)
    spec("name-slash", "a name with a slash", name="a/b")
    spec("name-nul", "a name with a NUL byte", name="a\u0000b")
    spec("name-dotdot", "a name that is ..", name="..")
    spec("generate-name-bad", "generateName with a space", name="", generate_name="bad name-")

    # --- tokens -------------------------------------------------------------
    def token(cid, value, desc):
        write("token", cid, "txt", value, desc)

    token("empty-bearer", "Bearer ", "Bearer with nothing after it")
    token("no-secret", "Bearer abcdef", "token id without a secret")
    token("unknown", "Bearer abcdef.0123456789abcdef", "well-formed, unknown token")
    token("upper", "Bearer ABCDEF.0123456789ABCDEF", "upper-case token")
    token("basic", "Basic YWRtaW46YWRtaW4=", "HTTP Basic credentials")
    token("three-parts", "Bearer abcdef.0123456789abcdef.extra", "a token with three parts")
    token("sql", "Bearer ' OR 1=1--.0123456789abcdef", "SQL in the token id")
    token("long", "Bearer " + "a" * 6000, "a 6000-character token")
    token("no-scheme", "abcdef.0123456789abcdef", "token without the Bearer scheme")

    # --- manifests for `certctl apply -f` ------------------------------------
    good_req = base64.b64encode(GOOD_PEM).decode()

    def manifest(cid, text, desc, ext_="yaml"):
        write("manifest", cid, ext_, text, desc)

    def k8s(**over):
        m = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "hostile"},
            "spec": {
                "request": good_req,
                "signerName": "kubernetes.io/kube-apiserver-client",
                "usages": ["digital signature", "client auth"],
            },
        }
        for k, v in over.items():
            if k.startswith("spec_"):
                m["spec"][k[5:]] = v
            elif v is None:
                m.pop(k, None)
            else:
                m[k] = v
        return json.dumps(m)

    manifest("empty", "", "an empty file")
    manifest("not-yaml", ": : : [\n", "text that is not YAML")
    manifest("kind-pod", k8s(kind="Pod"), "kind Pod", "json")
    manifest("api-v1beta1", k8s(apiVersion="certificates.k8s.io/v1beta1"), "apiVersion v1beta1", "json")
    manifest("no-spec", k8s(spec=None), "no spec", "json")
    manifest("request-not-base64", k8s(spec_request="%%%not base64%%%"), "spec.request not base64", "json")
    manifest("request-garbage", k8s(spec_request=base64.b64encode(b"garbage").decode()), "spec.request base64 of garbage", "json")
    manifest("usages-string", k8s(spec_usages="client auth"), "spec.usages as a string", "json")
    manifest("exp-string", k8s(spec_expirationSeconds="forever"), "expirationSeconds a string", "json")
    manifest("exp-overflow", k8s(spec_expirationSeconds=2 ** 40), "expirationSeconds beyond int32", "json")
    manifest("exp-negative", k8s(spec_expirationSeconds=-5), "expirationSeconds negative", "json")
    manifest("no-name", k8s(metadata={}), "metadata without a name", "json")
    manifest("binary", GOOD, "DER bytes", "bin")
    manifest("invalid-utf8", b"apiVersion: certificates.k8s.io/v1\nkind: \xff\xfe\n", "invalid UTF-8 in YAML")
    manifest("nul", "apiVersion: certificates.k8s.io/v1\x00\nkind: CertificateSigningRequest\n", "a NUL byte in YAML")
    bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
    prev = "a"
    for n in "bcdefghi":
        bomb += "%s: &%s [%s]\n" % (n, n, ",".join(["*" + prev] * 9))
        prev = n
    manifest("billion-laughs", bomb, "YAML alias bomb (billion laughs)")
    manifest("deep-nesting", "[" * 20000 + "]" * 20000, "20000 nested YAML flow sequences")
    manifest("duplicate-keys", '{"kind":"CertificateSigningRequest","kind":"Pod","apiVersion":"certificates.k8s.io/v1"}', "JSON with a duplicate key", "json")
    manifest("ruby-tag", "--- !ruby/object:Gem::Installer\ni: x\n", "a YAML tag for a foreign type")
    manifest("usage-unknown", k8s(spec_usages=["root access"]), "an unknown usage", "json")
    manifest("signer-empty", k8s(spec_signerName=""), "an empty signerName", "json")

    # --- raw protobuf bodies for Create (field paths by tag) --------------------
    def raw(cid, desc, body):
        write("raw", cid, "bin", body, desc)

    def ld(tag, payload):
        return bytes([(tag << 3) | 2]) + varint(len(payload)) + payload

    def varint(n):
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])

    def create(meta=b"", spec_=b""):
        return ld(1, ld(3, meta) + ld(4, spec_))

    spec_ok = ld(1, GOOD_PEM) + ld(2, b"kubernetes.io/kube-apiserver-client") + ld(4, b"client auth")
    raw("name-invalid-utf8", "metadata.name with invalid UTF-8", create(ld(1, b"a\xffb"), spec_ok))
    raw("signer-invalid-utf8", "spec.signer_name with invalid UTF-8", create(ld(1, b"ok"), ld(1, GOOD_PEM) + ld(2, b"\xc0\xaf") + ld(4, b"client auth")))
    raw("usage-invalid-utf8", "spec.usages with invalid UTF-8", create(ld(1, b"ok"), ld(1, GOOD_PEM) + ld(2, b"kubernetes.io/kube-apiserver-client") + ld(4, b"\xff")))
    raw("truncated", "a protobuf body cut mid-field", create(ld(1, b"ok"), spec_ok)[:-7])
    raw("bad-wire-type", "wire type 7 (invalid)", b"\x0f\x00\x00")
    raw("length-overflow", "a length prefix of 2^63", b"\x0a" + varint(2 ** 63))

    # --- malformed SignRequests for the signer --------------------------------
    def sign(cid, desc, **fields):
        write("sign", cid, "json", json.dumps(fields) + "\n", desc)

    sign("no-request", "no certificate_signing_request", drop="request")
    sign("no-metadata", "no metadata", drop="metadata")
    sign("no-spec", "no spec", drop="spec")
    sign("empty-uid", "metadata.uid empty", uid="")
    sign("empty-name", "metadata.name empty", name="")
    sign("empty-csr", "spec.request empty", request="")
    sign("usage-unknown", "an unknown usage", usages=["root access"])
    sign("exp-short", "expiration_seconds 60", expiration_seconds=60)

    with open(os.path.join(ROOT, "index.tsv"), "w") as f:
        f.write("# id\tkind\tfile\tdescription (generated by tests/scripts/gen_corpus.py)\n")
        for c in CASES:
            f.write("\t".join(c) + "\n")
        for cid, desc in [
            ("csr-1mib", "a 1 MiB CSR (a valid request padded with an extension)"),
            ("csr-6000-sans", "6000 DNS SANs (over the 64 KiB request limit)"),
            ("grpc-5mib", "a 5 MiB gRPC message to the approver"),
            ("grpc-5mib-signer", "a 5 MiB gRPC message to the signer"),
            ("pending-flood", "more pending requests than max_pending_per_requestor from one identity"),
            ("rate-flood", "a burst of calls beyond requests_per_second from one identity"),
            ("manifest-2mib", "a 2 MiB manifest for certctl apply -f"),
        ]:
            f.write("%s\tgen\t-\t%s\n" % (cid, desc))
    print("%d cases written to %s" % (len(CASES) + 7, os.path.normpath(ROOT)))


if __name__ == "__main__":
    sys.exit(main())

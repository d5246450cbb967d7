#!/usr/bin/env python3
# Quick relay cost figures for docs/transport.md (the real benchmark comes with bench/):
# the same byte pump (1 MiB writes of non-zero bytes, reads discarded) directly over a UNIX
# socket, directly over TCP on loopback, and through a pair of ferry-transport helpers on
# loopback (plaintext splice frames, then TLS 1.3); throughput and the helpers' CPU seconds
# (user + system, from wait4) per GiB moved.
#
#   tests/transport/measure-relay.py build/src/ferry-transport [GiB] [runs]
import os, resource, socket, subprocess, sys, tempfile, threading, time, statistics

helper = sys.argv[1]
size = int(float(sys.argv[2] if len(sys.argv) > 2 else 1) * 2**30)
runs = int(sys.argv[3] if len(sys.argv) > 3 else 3)
CHUNK = 1 << 20
tmp = tempfile.mkdtemp(prefix='ferry-measure-')
subprocess.run([os.path.join(os.path.dirname(__file__), 'make-pki.sh'), tmp + '/pki'], check=True)
token = tmp + '/token'
open(token, 'w').write('0123456789abcdef0123456789abcdef\n')

def pump(wfd, rfd):
    buf = memoryview(b'\xa5' * CHUNK)
    got = 0
    def writer():
        left = size
        while left:
            n = wfd.send(buf[:min(CHUNK, left)])
            left -= n
        wfd.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=writer)
    start = time.monotonic()
    t.start()
    rbuf = bytearray(CHUNK)
    while True:
        n = rfd.recv_into(rbuf)
        if not n:
            break
        got += n
    t.join()
    assert got == size, got
    return time.monotonic() - start

def notify_socket(name):
    path = f'{tmp}/{name}'
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return s, path

def wait_ready(s):
    while True:
        for line in s.recv(4096).decode().splitlines():
            if line.startswith('STATUS=listening: '):
                return line[len('STATUS=listening: '):]

def run_direct():
    path = f'{tmp}/direct.sock'
    l = socket.socket(socket.AF_UNIX); l.bind(path); l.listen(1)
    c = socket.socket(socket.AF_UNIX); c.connect(path)
    a, _ = l.accept()
    dt = pump(c, a)
    for s in (a, c, l): s.close()
    os.unlink(path)
    return dt, 0.0

def run_direct_tcp():
    l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
    c = socket.create_connection(l.getsockname())
    a, _ = l.accept()
    dt = pump(c, a)
    for s in (a, c, l): s.close()
    return dt, 0.0

def run_helpers(plaintext):
    extra = ['--plaintext'] if plaintext else []
    incoming = f'{tmp}/incoming.sock'
    l = socket.socket(socket.AF_UNIX); l.bind(incoming); l.listen(4)
    n1, p1 = notify_socket('n-dst'); n2, p2 = notify_socket('n-src')
    dst = subprocess.Popen([helper, '--destination', '--listen=127.0.0.1:0', '--qemu-socket=' + incoming,
                            '--token-file=' + token, '--pki-dir=' + tmp + '/pki/destination'] + extra,
                           env=dict(os.environ, NOTIFY_SOCKET=p1), stderr=subprocess.DEVNULL)
    peer = wait_ready(n1)
    src_sock = f'{tmp}/source.sock'
    src = subprocess.Popen([helper, '--source', '--peer=' + peer, '--peer-name=localhost', '--qemu-socket=' + src_sock,
                            '--token-file=' + token, '--pki-dir=' + tmp + '/pki/source'] + extra,
                           env=dict(os.environ, NOTIFY_SOCKET=p2), stderr=subprocess.DEVNULL)
    wait_ready(n2)
    c = socket.socket(socket.AF_UNIX); c.connect(src_sock)
    a, _ = l.accept()
    dt = pump(c, a)
    a.shutdown(socket.SHUT_WR); c.recv(1)  # end the return direction too
    cpu = 0.0
    for p in (src, dst):
        _, status, ru = os.wait4(p.pid, 0)
        assert status == 0, status
        cpu += ru.ru_utime + ru.ru_stime
    for s in (a, c, l, n1, n2): s.close()
    for f in (incoming, p1, p2): os.unlink(f)
    return dt, cpu

gib = size / 2**30
print(f'{gib:g} GiB per run, median of {runs} runs, {os.cpu_count()} CPUs')
for name, fn in (('direct UNIX socket', run_direct),
                 ('direct TCP loopback', run_direct_tcp),
                 ('helpers, plaintext (splice)', lambda: run_helpers(True)),
                 ('helpers, TLS 1.3', lambda: run_helpers(False))):
    results = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_SELF)
        dt, helpers = fn()
        after = resource.getrusage(resource.RUSAGE_SELF)
        pump_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        results.append((dt, helpers, pump_cpu + helpers))
    dt = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    total = statistics.median(r[2] for r in results)
    print(f'{name:30} {gib / dt:6.2f} GiB/s   helpers {cpu / gib:5.2f} CPU-s/GiB   '
          f'all (pump + helpers) {total / gib:5.2f} CPU-s/GiB')
subprocess.run(['rm', '-rf', tmp])

#!/usr/bin/env python3
# Manual check, not part of the suites: two real QEMUs (TCG, no guest OS, 64 MiB of random
# data loaded into the source's RAM) migrate through a pair of ferry-transport helpers on this
# machine, as ferryd will drive them: `migrate-incoming unix:` on the destination,
# `migrate unix:<source helper's socket>` on the source.
#
#   tests/transport/qemu-through-tunnel.py build/src/ferry-transport MODE [tls]
#   MODE: plain (one channel), multifd (3 channels), postcopy (switches to post-copy after 1 s)
#
# Prints QEMU's result on both sides and the helpers' exit statuses and last STATUS.
import json, os, socket, subprocess, sys, tempfile, time

helper, mode = sys.argv[1], sys.argv[2]
tls = len(sys.argv) > 3 and sys.argv[3] == 'tls'
d = tempfile.mkdtemp(prefix='ferry-qemu-tunnel-')
subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), 'make-pki.sh'), d + '/pki'], check=True)
open(d + '/token', 'w').write(os.urandom(16).hex() + '\n')
with open(d + '/random.bin', 'wb') as f:
    f.write(os.urandom(64 << 20))


class QMP:
    def __init__(self, path):
        for _ in range(300):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.1)
        self.f = self.s.makefile('rw')
        json.loads(self.f.readline())
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        self.f.write(json.dumps({'execute': name, 'arguments': args}) + '\n')
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'error' in r:
                raise RuntimeError(f'{name}: {r["error"]}')
            if 'return' in r:
                return r['return']


def qemu(name, extra):
    return subprocess.Popen(['qemu-system-x86_64', '-machine', 'pc,accel=tcg', '-m', '136M', '-nodefaults',
                             '-display', 'none', '-qmp', f'unix:{d}/{name}-qmp.sock,server=on,wait=off'] + extra,
                            stderr=open(f'{d}/{name}.log', 'w'))


def notify_socket(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(f'{d}/notify-{name}')
    s.settimeout(120)
    return s


def last_status(s):
    last = None
    s.setblocking(False)
    try:
        while True:
            for line in s.recv(4096).decode().splitlines():
                if line.startswith('STATUS='):
                    last = line[7:]
    except BlockingIOError:
        pass
    return last


def ready(s):
    while True:
        for line in s.recv(4096).decode().splitlines():
            if line.startswith('STATUS=listening: '):
                return line[len('STATUS=listening: '):]


plain = [] if tls else ['--plaintext']
dst = qemu('destination', ['-incoming', 'defer'])
src = qemu('source', ['-device', f'loader,file={d}/random.bin,addr=0x1000000'])
qd, qs = QMP(f'{d}/destination-qmp.sock'), QMP(f'{d}/source-qmp.sock')
for q in (qd, qs):
    if mode == 'multifd':
        q.cmd('migrate-set-capabilities', capabilities=[{'capability': 'multifd', 'state': True}])
        q.cmd('migrate-set-parameters', **{'multifd-channels': 3})
    if mode == 'postcopy':
        q.cmd('migrate-set-capabilities', capabilities=[{'capability': 'postcopy-ram', 'state': True}])
# slow enough that post-copy starts while pages are left
qs.cmd('migrate-set-parameters', **{'max-bandwidth': 20 << 20})
qd.cmd('migrate-incoming', uri=f'unix:{d}/incoming.sock')

nd, ns = notify_socket('destination'), notify_socket('source')
hd = subprocess.Popen([helper, '--destination', '--migration=check', '--listen=127.0.0.1:0',
                       f'--qemu-socket={d}/incoming.sock', f'--token-file={d}/token',
                       f'--pki-dir={d}/pki/destination'] + plain,
                      env=dict(os.environ, NOTIFY_SOCKET=f'{d}/notify-destination'),
                      stderr=open(f'{d}/helper-destination.log', 'w'))
peer = ready(nd)
hs = subprocess.Popen([helper, '--source', '--migration=check', f'--peer={peer}', '--peer-name=localhost',
                       f'--qemu-socket={d}/source.sock', f'--token-file={d}/token',
                       f'--pki-dir={d}/pki/source'] + plain,
                      env=dict(os.environ, NOTIFY_SOCKET=f'{d}/notify-source'),
                      stderr=open(f'{d}/helper-source.log', 'w'))
ready(ns)

qs.cmd('migrate', uri=f'unix:{d}/source.sock')
start, postcopy = time.monotonic(), False
while True:
    r = qs.cmd('query-migrate')
    if mode == 'postcopy' and not postcopy and r.get('status') == 'active' and time.monotonic() - start > 1:
        qs.cmd('migrate-start-postcopy')
        postcopy = True
    if r.get('status') in ('completed', 'failed', 'cancelled'):
        break
    time.sleep(0.2)
print(f'source QEMU: {r["status"]}, {r.get("ram", {}).get("transferred")} bytes, '
      f'post-copy started: {postcopy}, error: {r.get("error-desc")}')
for _ in range(300):
    if qd.cmd('query-status')['status'] == 'running':
        break
    time.sleep(0.2)
print('destination QEMU:', qd.cmd('query-status')['status'])
for name, h, n in (('source', hs, ns), ('destination', hd, nd)):
    try:
        code = h.wait(120)
    except subprocess.TimeoutExpired:
        h.kill()
        code = 'still running (killed)'
    print(f'{name} helper: exit {code}, {last_status(n)}')
for q in (qd, qs):
    q.cmd('quit')
src.wait()
dst.wait()
subprocess.run(['rm', '-rf', d])

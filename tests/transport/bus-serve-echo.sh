#!/bin/sh
# Stand-in for "ferry-transport --bus-serve" in test-peer: the connection is fd 0 and 1; echo
# what follows the preamble, so the test sees that ferry-peer read nothing past it.
[ "$1" = --bus-serve ] && [ $# -eq 1 ] || exit 2
exec cat

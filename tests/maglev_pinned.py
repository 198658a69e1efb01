"""Maglev choices the kernel made, pinned: the unit test checks lvscluster.plan.maglev computes
them, the kernel test sends these flows through real IPVS and checks the kernel still makes them."""

# (VIP port, client, source port, dest the kernel chose); the services are the kernel test's
# (tests/unit/test_maglev.py: KERNEL_TEST_SERVICES).
PINNED = [
    (80, "10.77.130.7", 40000, "10.77.2.15:80"), (80, "10.77.250.3", 33333, "10.77.2.11:80"),
    (81, "10.77.130.7", 40000, "10.77.2.12:81"), (81, "10.77.143.21", 55555, "10.77.2.11:81"),
    (82, "10.77.130.7", 40000, "10.77.2.13:82"), (82, "10.77.200.99", 1024, "10.77.2.12:82"),
    (84, "10.77.200.99", 1024, "10.77.2.16:84"), (84, "10.77.250.3", 33333, "10.77.2.14:84"),
    (86, "10.77.130.7", 40000, "10.77.2.14:86"), (86, "10.77.200.99", 1024, "10.77.2.16:86"),
    (88, "10.77.143.21", 55555, "10.77.2.15:88"), (88, "10.77.250.3", 33333, "10.77.2.15:88"),
]

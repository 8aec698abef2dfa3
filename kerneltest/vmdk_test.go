//go:build kernel

package kerneltest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lvmEnv writes an lvm.conf for a machine without udev (the VM): LVM must
// neither wait for udev nor expect it to create device nodes, must not use
// a devices file, and keeps no metadata backups under the read-only /etc.
// It returns the environment that points LVM at it.
func lvmEnv(t *testing.T, dir string) []string {
	t.Helper()
	conf := `devices {
	obtain_device_list_from_udev = 0
	use_devicesfile = 0
	filter = [ "a|^/dev/nbd|", "r|.*|" ]
}
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
global {
	locking_dir = "/run/lock/lvm"
}
backup {
	backup = 0
	archive = 0
}
`
	if err := os.WriteFile(filepath.Join(dir, "lvm.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "LVM_SYSTEM_DIR="+dir, "LVM_SUPPRESS_FD_WARNINGS=1")
}

// lvm runs an LVM (or any) command with env and fails the test if it fails.
func lvm(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// requireDM loads device-mapper for LVM (the VM's kernel has it as a
// module), failing the test if it cannot.
func requireDM(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/sys/module/dm_mod"); err == nil {
		return
	}
	args := []string{"dm_mod"}
	if kdir := os.Getenv("NBDLOOP_KDIR"); kdir != "" {
		args = append([]string{"-d", kdir}, args...)
	}
	must(t, "/sbin/modprobe", args...)
}

// TestKernelVMDKLVM is the paper's VMDK scenario: a disk with a partition
// table, an ext4 partition and an LVM physical volume carrying a volume
// group of two logical volumes, built on a raw file attached by nbdloop and
// converted to VMDK by qemu-img; then attached from the VMDK with -P, the
// volume group activated, a file written to the root LV, everything torn
// down; qemu-img check passes, and a second attach reads the file back.
func TestKernelVMDKLVM(t *testing.T) {
	requireDriver(t)
	requireDM(t)
	requireClean(t, "before")
	dir := scratch(t)
	env := lvmEnv(t, dir)
	raw := filepath.Join(dir, "disk.raw")
	img := filepath.Join(dir, "disk.vmdk")
	const vg = "nbdloopvmdk"

	// Build the disk on the raw file.
	must(t, "truncate", "-s", "256M", raw)
	sh(t, `printf 'label: dos\n,96M,83\n,,8e\n' | sfdisk -q `+raw)
	dev := attachDev(t, "-P", raw)
	must(t, "mkfs.ext4", "-q", "-L", "boot", dev+"p1")
	lvm(t, env, "pvcreate", "-q", dev+"p2")
	lvm(t, env, "vgcreate", "-q", vg, dev+"p2")
	lvm(t, env, "lvcreate", "-q", "-L", "64M", "-n", "root", vg)
	lvm(t, env, "lvcreate", "-q", "-l", "100%FREE", "-n", "data", vg)
	for _, lv := range []string{"root", "data"} {
		waitNode(t, "/dev/"+vg+"/"+lv)
		must(t, "mkfs.ext4", "-q", "/dev/"+vg+"/"+lv)
	}
	lvm(t, env, "vgchange", "-q", "-an", vg)
	detach(t, dev)
	requireClean(t, "after the raw build")
	must(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", raw, img)
	must(t, "rm", raw)

	// Attach the VMDK: both partitions, both LVs.
	dev = attachDev(t, "-P", img)
	for _, p := range []string{"p1", "p2"} {
		if _, err := os.Stat(dev + p); err != nil {
			t.Fatalf("%s%s missing after attach -P: %v", dev, p, err)
		}
	}
	lvm(t, env, "pvscan", "--cache")
	lvm(t, env, "vgchange", "-ay", vg)
	lvs := lvm(t, env, "lvs", "--noheadings", "-o", "lv_name", vg)
	if f := strings.Fields(lvs); len(f) != 2 || !strings.Contains(lvs, "root") || !strings.Contains(lvs, "data") {
		t.Fatalf("lvs %s = %q, want root and data", vg, lvs)
	}
	root := "/dev/" + vg + "/root"
	waitNode(t, root)
	mnt := filepath.Join(dir, "mnt")
	must(t, "mkdir", "-p", mnt)
	must(t, "mount", root, mnt)
	want := strings.Repeat("written through nbdloop into a VMDK\n", 50000) // 1.8 MB: new grains
	if err := os.WriteFile(filepath.Join(mnt, "hello.txt"), []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	must(t, "umount", mnt)
	must(t, "fsck.ext4", "-n", dev+"p1")
	lvm(t, env, "vgchange", "-q", "-an", vg)
	detach(t, dev)
	requireClean(t, "after the VMDK attach")
	must(t, "qemu-img", "check", img)

	// Attach again, read-only, and read the file back.
	dev = attachDev(t, "-P", "-r", img)
	lvm(t, env, "pvscan", "--cache")
	lvm(t, env, "vgchange", "-ay", vg)
	waitNode(t, root)
	must(t, "mount", "-o", "ro", root, mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "hello.txt"))
	must(t, "umount", mnt)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("hello.txt read back %d bytes, want the %d written", len(got), len(want))
	}
	lvm(t, env, "vgchange", "-q", "-an", vg)
	detach(t, dev)
	requireClean(t, "after")
}

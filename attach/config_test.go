package attach

import (
	"strings"
	"testing"
	"time"
)

func TestNewConfigDefaults(t *testing.T) {
	c := NewConfig("disk.img")
	if c.Source != "disk.img" {
		t.Errorf("Source = %q, want %q", c.Source, "disk.img")
	}
	if c.Index != -1 {
		t.Errorf("Index = %d, want -1 (the kernel picks)", c.Index)
	}
	if c.BlockSize != 512 {
		t.Errorf("BlockSize = %d, want 512", c.BlockSize)
	}
	if c.DeadTimeout != 30*time.Second {
		t.Errorf("DeadTimeout = %v, want 30s", c.DeadTimeout)
	}
	if c.Timeout != 0 {
		t.Errorf("Timeout = %v, want 0 (never)", c.Timeout)
	}
	if c.Connections < 1 || c.Connections > MaxConnections {
		t.Errorf("Connections = %d, want 1..%d", c.Connections, MaxConnections)
	}
	if c.Connections != DefaultConnections() {
		t.Errorf("Connections = %d, want DefaultConnections() = %d", c.Connections, DefaultConnections())
	}
	if c.ReadOnly || c.PartScan || c.DirectIO || c.Offset != 0 || c.SizeLimit != 0 {
		t.Errorf("NewConfig = %+v, want ReadOnly, PartScan, DirectIO, Offset and SizeLimit unset", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("NewConfig(%q).Validate() = %v, want nil", c.Source, err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		source  string // "" means "disk.img"
		edit    func(c *Config)
		wantErr string // substring; "" means valid
	}{
		{name: "defaults", edit: func(c *Config) {}},
		{name: "block size 1024", edit: func(c *Config) { c.BlockSize = 1024 }},
		{name: "block size 2048", edit: func(c *Config) { c.BlockSize = 2048 }},
		{name: "block size 4096", edit: func(c *Config) { c.BlockSize = 4096 }},
		{name: "block size 0", edit: func(c *Config) { c.BlockSize = 0 }, wantErr: "--block-size 0: must be a power of two from 512 to 4096"},
		{name: "block size 256", edit: func(c *Config) { c.BlockSize = 256 }, wantErr: "--block-size 256: must be a power of two"},
		{name: "block size 1000", edit: func(c *Config) { c.BlockSize = 1000 }, wantErr: "--block-size 1000: must be a power of two"},
		{name: "block size 1536", edit: func(c *Config) { c.BlockSize = 1536 }, wantErr: "--block-size 1536: must be a power of two"},
		{name: "block size 8192", edit: func(c *Config) { c.BlockSize = 8192 }, wantErr: "--block-size 8192: must be a power of two"},
		{name: "block size negative", edit: func(c *Config) { c.BlockSize = -512 }, wantErr: "--block-size -512"},
		{name: "one connection", edit: func(c *Config) { c.Connections = 1 }},
		{name: "64 connections", edit: func(c *Config) { c.Connections = 64 }},
		{name: "0 connections", edit: func(c *Config) { c.Connections = 0 }, wantErr: "--connections 0: must be from 1 to 64"},
		{name: "65 connections", edit: func(c *Config) { c.Connections = 65 }, wantErr: "--connections 65: must be from 1 to 64"},
		{name: "timeout 30s", edit: func(c *Config) { c.Timeout = 30 * time.Second }},
		{name: "timeout negative", edit: func(c *Config) { c.Timeout = -time.Second }, wantErr: "--timeout -1s: must be whole seconds"},
		{name: "timeout fraction", edit: func(c *Config) { c.Timeout = 1500 * time.Millisecond }, wantErr: "--timeout 1.5s: must be whole seconds"},
		{name: "dead timeout 0", edit: func(c *Config) { c.DeadTimeout = 0 }},
		{name: "dead timeout negative", edit: func(c *Config) { c.DeadTimeout = -time.Minute }, wantErr: "--dead-timeout -1m0s: must be whole seconds"},
		{name: "dead timeout fraction", edit: func(c *Config) { c.DeadTimeout = time.Millisecond }, wantErr: "--dead-timeout 1ms: must be whole seconds"},
		{name: "offset 512", edit: func(c *Config) { c.Offset = 512 }},
		{name: "offset negative", edit: func(c *Config) { c.Offset = -512 }, wantErr: "--offset -512: must not be negative"},
		{name: "offset unaligned", edit: func(c *Config) { c.Offset = 100 }, wantErr: "--offset 100: must be a multiple of 512 bytes"},
		{name: "sizelimit", edit: func(c *Config) { c.SizeLimit = 1024 }},
		{name: "sizelimit unaligned", edit: func(c *Config) { c.SizeLimit = 1000 }, wantErr: "--sizelimit 1000: not a multiple of the 512-byte block size (use --sizelimit 512 or --sizelimit 1024)"},
		{name: "sizelimit below a block", edit: func(c *Config) { c.SizeLimit = 100 }, wantErr: "--sizelimit 100: not a multiple of the 512-byte block size (use --sizelimit 512)"},
		{name: "sizelimit of -b 4096", edit: func(c *Config) { c.BlockSize, c.SizeLimit = 4096, 6144 }, wantErr: "--sizelimit 6144: not a multiple of the 4096-byte block size (use --sizelimit 4096 or --sizelimit 8192)"},
		{name: "memory below a block", source: "memory:100", edit: func(c *Config) {}, wantErr: "memory:100: smaller than one 512-byte block (give a larger size, e.g. memory:1G)"},
		{name: "memory below -b 4096", source: "memory:1000", edit: func(c *Config) { c.BlockSize = 4096 }, wantErr: "memory:1000: smaller than one 4096-byte block"},
		{name: "memory of one block", source: "memory:512", edit: func(c *Config) {}},
		{name: "sizelimit negative", edit: func(c *Config) { c.SizeLimit = -1 }, wantErr: "--sizelimit -1: must not be negative"},
		{name: "direct io on a file", edit: func(c *Config) { c.DirectIO = true }},
		{name: "empty source", edit: func(c *Config) { c.Source = "" }, wantErr: "no source given"},
		{name: "bad memory source", source: "memory:0", edit: func(c *Config) {}, wantErr: "memory:0: size must be greater than 0"},
		{name: "memory", source: "memory:1G", edit: func(c *Config) {}},
		{name: "memory with offset", source: "memory:1G", edit: func(c *Config) { c.Offset = 512 },
			wantErr: "memory:1G: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "memory with sizelimit", source: "memory:1G", edit: func(c *Config) { c.SizeLimit = 512 },
			wantErr: "memory:1G: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "memory with direct io", source: "memory:1G", edit: func(c *Config) { c.DirectIO = true },
			wantErr: "memory:1G: --offset, --sizelimit and --direct-io apply to files only"},
		{name: "memory read-only", source: "memory:1G", edit: func(c *Config) { c.ReadOnly = true }},
		{name: "cache dir", source: "https://h/disk.img", edit: func(c *Config) { c.CacheDir = "/var/cache/nbdloop" }},
		{name: "cache dir relative", source: "https://h/disk.img", edit: func(c *Config) { c.CacheDir = "cache" },
			wantErr: "--cache-dir cache: must be an absolute path"},
		{name: "cache dir of a file", edit: func(c *Config) { c.CacheDir = "/var/cache/nbdloop" },
			wantErr: "disk.img: --cache-dir applies to http:// and https:// sources only (omit it)"},
		{name: "cache dir of a partition of a URL", source: "https://h/disk.img", edit: func(c *Config) { c.CacheDir = "/c"; c.Partition = 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.source
			if src == "" {
				src = "disk.img"
			}
			c := NewConfig(src)
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil (config %+v)", err, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

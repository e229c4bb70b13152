// Command superchainstub writes a stand-in for op-core/superchain/superchain-configs.zip.
//
// Upstream generates that zip from the superchain registry and go:embeds it, but the
// published Go module does not ship it, so op-node does not compile from the module as is.
// The stand-in holds an empty chain list and an empty zstd dictionary: every --network
// preset is unknown and nodes are configured with --rollup.config. The pinned
// superchain-configs.zip.sha256 (checked at op-node start-up) is rewritten to match.
//
// The zip is written deterministically (fixed timestamps, fixed order), so the same
// upstream version always gets the same stand-in.
//
// Usage: superchainstub <optimism-dir>/op-core/superchain
package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: superchainstub <dir of op-core/superchain>")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "superchainstub:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	modified := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range []struct{ name, body string }{
		{"chains.json", "{}"},
		{"dictionary", ""},
	} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store, Modified: modified})
		if err != nil {
			return err
		}
		if _, err := w.Write([]byte(f.body)); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	sum := sha256.Sum256(buf.Bytes())
	if err := os.WriteFile(filepath.Join(dir, "superchain-configs.zip"), buf.Bytes(), 0o644); err != nil {
		return err
	}
	line := hex.EncodeToString(sum[:]) + "  superchain-configs.zip\n"
	return os.WriteFile(filepath.Join(dir, "superchain-configs.zip.sha256"), []byte(line), 0o644)
}

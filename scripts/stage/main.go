// Command stage builds the deployable Functions package: host.json, every
// functions/<name>/ folder lifted to the package root (the host only finds
// functions in immediate subfolders of the script root) and the linux/amd64
// handler binary with its run bit. `make build`, azd's prepackage hook and
// the host-contract test all run it, on any OS.
//
//	go run ./scripts/stage [-out dist] [-goos linux -goarch amd64]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

func main() {
	out := flag.String("out", "dist", "package directory (replaced)")
	goos := flag.String("goos", "linux", "target OS of the handler binary (the Function App runs Linux)")
	goarch := flag.String("goarch", "amd64", "target architecture of the handler binary")
	version := flag.String("version", "dev", "version reported by the server")
	flag.Parse()
	if err := stage(*out, *goos, *goarch, *version); err != nil {
		fmt.Fprintln(os.Stderr, "stage:", err)
		os.Exit(1)
	}
}

func stage(out, goos, goarch, version string) error {
	if _, err := os.Stat("host.json"); err != nil {
		return errors.New("run from the repository root (host.json not found)")
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := copyFile("host.json", filepath.Join(out, "host.json")); err != nil {
		return err
	}
	fns, err := os.ReadDir("functions")
	if err != nil {
		return fmt.Errorf("reading functions/: %w", err)
	}
	for _, fn := range fns {
		if !fn.IsDir() {
			continue
		}
		if err := copyTree(filepath.Join("functions", fn.Name()), filepath.Join(out, fn.Name())); err != nil {
			return err
		}
	}
	bin := filepath.Join(out, "handler")
	if goos == "windows" {
		bin += ".exe"
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin, "./handler")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the handler: %w", err)
	}
	// Zip tools on Windows drop the mode; setting it explicitly documents
	// that the host execs this file.
	if runtime.GOOS != "windows" {
		if err := os.Chmod(bin, 0o755); err != nil {
			return err
		}
	}
	fmt.Printf("staged %s (host.json, %d function folder(s), %s/%s handler)\n", out, len(fns), goos, goarch)
	return nil
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

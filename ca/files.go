package ca

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxSecretFile is the largest key or seal key file accepted.
const maxSecretFile = 64 << 10

// writeFileAtomic writes data to path with the given mode: a temporary file
// in the same directory, synced, then renamed over path, then the directory
// synced. Readers see the old file or the new one, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ca: writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("ca: writing %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("ca: writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("ca: writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("ca: writing %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ca: writing %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// readSecretFile reads a private key or seal key file. It refuses anything
// but a regular file of mode 0600 or stricter, and files over maxSecretFile.
// The mode is checked on the open file, so a swap after the check is seen.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ca: reading %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ca: reading %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ca: reading %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, &KeyFileModeError{Path: path, Mode: fi.Mode()}
	}
	return readLimited(f, path, maxSecretFile)
}

// readPublicFile reads a certificate file of at most max bytes.
func readPublicFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ca: reading %s: %w", path, err)
	}
	defer f.Close()
	return readLimited(f, path, max)
}

func readLimited(r io.Reader, path string, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("ca: reading %s: %w", path, err)
	}
	if int64(len(b)) > max {
		clear(b)
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, path, max)
	}
	return b, nil
}

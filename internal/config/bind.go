package config

import (
	"flag"
)

// bound is a set of settings whose flags are registered on a flag set; once
// it is parsed, resolve reads and judges them. Load binds every setting,
// the tools' binders (BindNATS, BindStreams) only theirs.
type bound struct {
	specs    []spec
	fromFlag map[string]string
}

// bindFlags registers on fs the flags of the settings keep selects.
func bindFlags(fs *flag.FlagSet, keep func(*spec) bool) *bound {
	b := &bound{fromFlag: make(map[string]string)}
	for _, s := range table() {
		if keep(&s) {
			b.specs = append(b.specs, s)
		}
	}
	for i := range b.specs {
		if s := &b.specs[i]; s.Flag != "" {
			fs.Var(rawFlag{raw: b.fromFlag, name: s.Flag, isBool: s.isBool}, s.Flag, s.Description)
		}
	}
	return b
}

// resolve reads each bound setting (flag > environment > default) into a
// Config and judges them all, so that one run names everything to fix:
// each setting's own checks, then the relations among those that passed
// (see problems). Errors name each setting the way it was given.
func (b *bound) resolve(getenv func(string) string) (Config, error) {
	c := Config{NATSConfigDir: natsConfigDir(getenv)}
	source := make(map[string]string, len(b.specs)) // by key: how the user gave each
	var errs []error
	parsed := make([]spec, 0, len(b.specs))
	for i := range b.specs {
		s := &b.specs[i]
		raw, name, given := s.lookup(b.fromFlag, getenv)
		source[s.key()] = name
		if err := s.set(&c, raw); err != nil {
			errs = append(errs, &SettingError{Setting: name, Value: s.quoteRaw(raw), Err: err})
			continue
		}
		if !given && s.defaulted != nil {
			s.defaulted(&c)
		}
		parsed = append(parsed, *s)
	}
	errs = append(errs, c.problems(parsed, func(s *spec) string { return source[s.key()] })...)
	return c, joinSettingErrors(errs)
}

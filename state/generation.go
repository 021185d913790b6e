package state

import "strconv"

// ChangelogTopicFor is the changelog topic of app's state generation gen:
// ChangelogTopic(app) for generation 0, "<app>-g<gen>-features-changelog"
// after. A replay builds a new generation beside the serving one, so each
// generation has its own changelog.
func ChangelogTopicFor(app string, gen int) string {
	if gen == 0 {
		return ChangelogTopic(app)
	}
	return app + "-g" + strconv.Itoa(gen) + "-features-changelog"
}

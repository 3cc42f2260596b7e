//! Near misses the guard must reject and paraphrases it must let through.

use super::compatible;

#[track_caller]
fn differ(a: &str, b: &str) {
    assert!(!compatible(a, b), "should differ: {a:?} vs {b:?}");
    assert!(
        !compatible(b, a),
        "should differ (reversed): {b:?} vs {a:?}"
    );
}

#[track_caller]
fn agree(a: &str, b: &str) {
    assert!(compatible(a, b), "should agree: {a:?} vs {b:?}");
    assert!(compatible(b, a), "should agree (reversed): {b:?} vs {a:?}");
}

#[test]
fn numbers_must_match() {
    differ("What is 2+2?", "What is 2+3?");
    differ(
        "Is 10 mg of melatonin safe?",
        "Is 100 mg of melatonin safe?",
    );
    differ("What's new in Python 2?", "What's new in Python 3?");
    differ("What is 15% of 80?", "What is 15% of 90?");
    differ("Interest on $1,000 at 5%", "Interest on $1,000 at 6%");
    differ("Boil eggs for 7 minutes", "Boil eggs for 10 minutes");
    differ("What is 3.14 rounded?", "What is 3.15 rounded?");
    differ("Who won the 2018 World Cup?", "Who won the 2022 World Cup?");
    differ("Tell me three jokes", "Tell me five jokes");
    differ("What is 2+2?", "What is 2*2?");
    differ("What is 5 - 3?", "What is 5 + 3?");
    differ("Is -5 less than 3?", "Is 5 less than 3?");
}

#[test]
fn number_forms_are_canonicalised() {
    agree("What is 2+2?", "what is 2 + 2");
    agree("What is two plus two?", "What's 2 + 2?");
    agree("Population over 1,000,000", "population over 1000000");
    agree("Price is 2.50", "price is 2.5");
    agree("Tell me twenty five facts", "Tell me 25 facts");
    agree("Is 10mg safe?", "Is 10 mg safe?");
    agree("Is 10 milligrams safe?", "Is 10 mg safe?");
    agree("What is 50% of 10?", "what is 50 percent of 10");
    agree("Who won the 3rd round?", "who won the third round?");
    agree("Tips for a 5k run", "Tips for a 5000 run");
    agree("two hundred people", "200 people");
}

#[test]
fn ordinals_percentages_and_units_are_distinct_from_plain_numbers() {
    differ("Who finished 3rd?", "Who finished 3?");
    differ("What is 5% of the total?", "What is 5 of the total?");
    differ("Is 10 mg a lot?", "Is 10 g a lot?");
    differ("Convert 10 km to miles", "Convert 10 miles to km");
    differ("Events in the 1990s", "Events in 1990");
}

#[test]
fn number_words_one_to_twenty() {
    for (word, digits) in [
        ("one", "1"),
        ("seven", "7"),
        ("twelve", "12"),
        ("twenty", "20"),
    ] {
        agree(
            &format!("Give me {word} examples"),
            &format!("Give me {digits} examples"),
        );
    }
    differ("Give me eleven examples", "Give me twelve examples");
}

#[test]
fn pronoun_one_is_not_a_number() {
    agree("Which one is cheaper?", "Which is cheaper?");
    agree("Is this one better?", "Is this better?");
}

#[test]
fn negation_must_match() {
    differ(
        "Is it safe to eat raw eggs?",
        "Is it not safe to eat raw eggs?",
    );
    differ("Why does my code compile?", "Why doesn't my code compile?");
    differ("Can I run this on Windows?", "I cannot run this on Windows");
    differ("Cake recipe with eggs", "Cake recipe without eggs");
    differ("Should I ever do this?", "Should I never do this?");
    agree(
        "Why doesn't my code compile?",
        "Why does my code not compile?",
    );
    agree("Why can't I log in?", "Why cannot I log in?");
}

#[test]
fn entities_must_match() {
    differ(
        "What is the capital of France?",
        "What is the capital of Germany?",
    );
    differ("Best museums in Paris", "Best museums in Berlin");
    differ("Paris is bigger than Rome?", "Berlin is bigger than Rome?");
    differ(
        "How do I install it on macOS?",
        "How do I install it on Ubuntu?",
    );
    differ("Convert USD to EUR", "Convert USD to GBP");
    differ("What does `git rebase` do?", "What does `git merge` do?");
    differ("How do I use os.path.join?", "How do I use os.path.split?");
    differ(
        "Is vitamin C good for colds?",
        "Is vitamin D good for colds?",
    );
    differ("Is IPv4 faster?", "Is IPv6 faster?");
    differ(
        "Explain \"eventual consistency\"",
        "Explain \"strong consistency\"",
    );
    differ("Fetch https://example.com/a", "Fetch https://example.com/b");
}

#[test]
fn entity_case_and_sentence_start_do_not_matter() {
    agree(
        "What is the capital of France?",
        "what is the capital of france",
    );
    agree(
        "Paris: what is there to see?",
        "What is there to see in Paris?",
    );
    agree(
        "What's the capital of France?",
        "What is the capital of France?",
    );
    agree("Is python3 slow?", "Is Python 3 slow?");
    agree("How do I reset my password?", "HOW DO I RESET MY PASSWORD?");
    agree("France's capital city?", "Capital city of France?");
    agree(
        "Explain recursion simply",
        "Can you explain recursion simply?",
    );
    agree(
        "Tell me about COVID-19 symptoms",
        "What are covid 19 symptoms?",
    );
}

#[test]
fn entity_direction_matters_but_plain_order_does_not() {
    // Decision: which entity is the *target* of to/into/than matters; otherwise order is free.
    differ(
        "How do I convert Celsius to Fahrenheit?",
        "How do I convert Fahrenheit to Celsius?",
    );
    differ(
        "convert celsius to fahrenheit",
        "convert fahrenheit to celsius",
    );
    differ("Translate English to French", "Translate French to English");
    differ("Is Rust faster than Go?", "Is Go faster than Rust?");
    agree(
        "Flights from Paris to London",
        "Flights to London from Paris",
    );
    agree("Is Rust faster than Go?", "Is Rust really faster than Go?");
}

#[test]
fn antonyms_conflict_when_both_sides_use_the_group() {
    differ(
        "Should I eat before a workout?",
        "Should I eat after a workout?",
    );
    differ(
        "Is the stock price above the average?",
        "Is the stock price below the average?",
    );
    differ(
        "How to increase blood pressure",
        "How to decrease blood pressure",
    );
    differ(
        "Find the max of a list in Python",
        "Find the min of a list in Python",
    );
    differ("When is the first train?", "When is the last train?");
    differ(
        "Is it a good time to buy Tesla stock?",
        "Is it a good time to sell Tesla stock?",
    );
    differ("Which uses more memory?", "Which uses less memory?");
    // One side silent on the group: no conflict.
    agree(
        "Should I stretch before running?",
        "Should I stretch when running?",
    );
}

#[test]
fn plain_paraphrases_pass() {
    agree(
        "How do I reset my password?",
        "What are the steps to reset my password?",
    );
    agree(
        "How long should I boil an egg?",
        "how long do you boil eggs",
    );
    agree(
        "What's the weather like in Tokyo in April?",
        "How is Tokyo's weather in April?",
    );
    agree(
        "Explain what a closure is in JavaScript",
        "What is a closure in JavaScript?",
    );
    agree("", "");
}

#[test]
fn abbreviations_are_not_code() {
    agree(
        "Name a fruit, e.g. an apple",
        "Name a fruit, e.g. an apple please",
    );
}

#[test]
fn hostile_input_does_not_panic() {
    for s in [
        "\"",
        "``",
        "“",
        "'s",
        "-",
        "$",
        "1,",
        ",1",
        "1..2",
        "9".repeat(400).as_str(),
        "one hundred thousand million billion trillion trillion trillion",
        "é.ü",
        "\u{0}",
        "3rd 4th th",
        "x x x",
        "% % 5%",
        "a\nb\r\nc",
    ] {
        let _ = compatible(s, "what is 2+2");
    }
}

#[test]
fn swapped_source_and_target_differ() {
    differ(
        "How do I convert a string to an integer in Java?",
        "How do I convert an integer to a string in Java?",
    );
    differ(
        "Can I substitute butter for oil?",
        "Can I substitute oil for butter?",
    );
    differ(
        "How many teaspoons are in a tablespoon?",
        "How many tablespoons are in a teaspoon?",
    );
    differ("convert km to miles", "convert miles to km");
    // One word changing role is rewording, not a swap.
    agree(
        "Do I need a visa to visit Japan?",
        "Is a visa required to travel to Japan?",
    );
    agree(
        "What's the exchange rate between USD and EUR?",
        "What is the USD to EUR exchange rate?",
    );
}

#[test]
fn phrasal_particles_are_antonyms() {
    differ("My phone won't turn on", "My phone won't turn off");
    differ("How do I log in?", "How do I log out?");
    // Plain prepositions are not.
    agree("Install it on Windows", "Install it on Windows please");
}

#[test]
fn more_antonyms() {
    differ(
        "Sort the list in ascending order",
        "Sort the list in descending order",
    );
    differ(
        "How long to boil an egg for a soft yolk?",
        "How long to boil an egg for a hard yolk?",
    );
    differ("How do I gain weight fast?", "How do I lose weight fast?");
}

#[test]
fn single_content_word_substitution_differs() {
    differ(
        "How long can cooked rice stay in the fridge?",
        "How long can cooked rice stay in the freezer?",
    );
    differ(
        "How do I sort a dictionary by value?",
        "How do I sort a dictionary by key?",
    );
    differ(
        "How much sleep does an adult need?",
        "How much sleep does a teenager need?",
    );
    // Inflections and function words are not substitutions.
    agree("Why is my battery draining?", "Why is my battery drain?");
    agree("How do I track my package?", "How can I track my package?");
    agree("How do I boil eggs?", "How do I boil an egg?");
    // The documented price: a one-word synonym swap counts as a different question.
    assert!(!compatible(
        "Is Rust faster than Go?",
        "Is Rust quicker than Go?"
    ));
}

#[test]
fn gaining_a_role_is_rewording_not_a_swap() {
    agree(
        "How do I center a div in CSS?",
        "What's the CSS to center a div?",
    );
    agree(
        "How do I stop my dog from barking at night?",
        "How can I get my dog to stop barking at night?",
    );
    agree(
        "Who discovered penicillin?",
        "Who was the discoverer of penicillin?",
    );
}

#[test]
fn check_names_the_failing_feature() {
    use super::{check, Mismatch};
    assert_eq!(
        check("What is 2+2?", "What is 2+3?"),
        Err(Mismatch::Numbers)
    );
    assert_eq!(
        check("What is 2+2?", "What is 2*2?"),
        Err(Mismatch::Operators)
    );
    assert_eq!(
        check("Is it safe?", "Is it not safe?"),
        Err(Mismatch::Negation)
    );
    assert_eq!(
        check("Visit Paris", "Visit Berlin"),
        Err(Mismatch::Entities)
    );
    assert_eq!(
        check("convert km to miles", "convert miles to km"),
        Err(Mismatch::Roles)
    );
    assert_eq!(
        check("eat before running", "eat after running"),
        Err(Mismatch::Antonyms)
    );
    assert_eq!(
        check("store in the fridge", "store in the freezer"),
        Err(Mismatch::Substitution)
    );
    assert_eq!(check("How do I exit Vim?", "how do i exit vim"), Ok(()));
    assert_eq!(Mismatch::Roles.as_str(), "roles");
}

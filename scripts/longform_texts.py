"""Public-domain prose for scripts/bench_longform.py: what espeak-ng reads aloud.

TEST_TEXTS are the long recordings the recognisers are scored on, each read by one voice (each lasts more than
90 s). TRAIN_TEXTS teach the CTC model to spell what it hears; they share no sentence with the test texts (the
tests of the benchmark check that). Numbers are spelled out and dashes dropped, so that a transcript has one
written form.
"""

from __future__ import annotations

# name -> (espeak-ng voice, text)
TEST_TEXTS = {
    "austen_pride": (
        "en-us",
        "It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want "
        "of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters. My dear Mr. Bennet, said his "
        "lady to him one day, have you heard that Netherfield Park is let at last? Mr. Bennet replied that he had "
        "not. But it is, returned she, for Mrs. Long has just been here, and she told me all about it. Mr. Bennet "
        "made no answer. Do you not want to know who has taken it? cried his wife impatiently. You want to tell "
        "me, and I have no objection to hearing it. This was invitation enough. Why, my dear, you must know, "
        "Mrs. Long says that Netherfield is taken by a young man of large fortune from the north of England; that "
        "he came down on Monday in a chaise and four to see the place, and was so much delighted with it that he "
        "agreed with Mr. Morris immediately; that he is to take possession before Michaelmas, and some of his "
        "servants are to be in the house by the end of next week. What is his name? Bingley. Is he married or "
        "single? Oh, single, my dear, to be sure! A single man of large fortune; four or five thousand a year. "
        "What a fine thing for our girls! How so? How can it affect them? My dear Mr. Bennet, replied his wife, "
        "how can you be so tiresome! You must know that I am thinking of his marrying one of them. Is that his "
        "design in settling here? Design! Nonsense, how can you talk so! But it is very likely that he may fall in "
        "love with one of them, and therefore you must visit him as soon as he comes.",
    ),
    "dickens_two_cities": (
        "en-gb-x-rp",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of light, it "
        "was the season of darkness, it was the spring of hope, it was the winter of despair. We had everything "
        "before us, we had nothing before us, we were all going direct to heaven, we were all going direct the "
        "other way. In short, the period was so far like the present period, that some of its noisiest "
        "authorities insisted on its being received, for good or for evil, in the superlative degree of comparison "
        "only. There were a king with a large jaw and a queen with a plain face, on the throne of England; there "
        "were a king with a large jaw and a queen with a fair face, on the throne of France. In both countries it "
        "was clearer than crystal to the lords of the state preserves of loaves and fishes, that things in general "
        "were settled for ever. France, less favoured on the whole as to matters spiritual than her sister of the "
        "shield and trident, rolled with exceeding smoothness down hill, making paper money and spending it. Under "
        "the guidance of her Christian pastors, she entertained herself, besides, with such humane achievements as "
        "sentencing a youth to have his hands cut off, his tongue torn out with pincers, and his body burned alive, "
        "because he had not kneeled down in the rain to do honour to a dirty procession of monks which passed "
        "within his view, at a distance of some fifty or sixty yards. It is likely enough that, rooted in the "
        "woods of France and Norway, there were growing trees, when that sufferer was put to death, already marked "
        "by the woodman, Fate, to come down and be sawn into boards.",
    ),
    "dickens_carol": (
        "en-gb",
        "Marley was dead, to begin with. There is no doubt whatever about that. The register of his burial was "
        "signed by the clergyman, the clerk, the undertaker, and the chief mourner. Scrooge signed it. And "
        "Scrooge's name was good upon the exchange, for anything he chose to put his hand to. Old Marley was as "
        "dead as a door nail. Mind! I don't mean to say that I know, of my own knowledge, what there is "
        "particularly dead about a door nail. I might have been inclined, myself, to regard a coffin nail as the "
        "deadest piece of ironmongery in the trade. But the wisdom of our ancestors is in the simile; and my "
        "unhallowed hands shall not disturb it, or the country's done for. You will therefore permit me to repeat, "
        "emphatically, that Marley was as dead as a door nail. Scrooge knew he was dead? Of course he did. How "
        "could it be otherwise? Scrooge and he were partners for I don't know how many years. Scrooge was his sole "
        "executor, his sole administrator, his sole assign, his sole residuary legatee, his sole friend, and sole "
        "mourner. And even Scrooge was not so dreadfully cut up by the sad event, but that he was an excellent man "
        "of business on the very day of the funeral, and solemnised it with an undoubted bargain. The mention of "
        "Marley's funeral brings me back to the point I started from. There is no doubt that Marley was dead. This "
        "must be distinctly understood, or nothing wonderful can come of the story I am going to relate.",
    ),
}

TRAIN_TEXTS = [
    # Melville, Moby Dick
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and "
    "nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of "
    "the world. It is a way I have of driving off the spleen and regulating the circulation. Whenever I find "
    "myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; whenever I find "
    "myself involuntarily pausing before coffin warehouses, and bringing up the rear of every funeral I meet; "
    "then, I account it high time to get to sea as soon as I can. This is my substitute for pistol and ball. "
    "There is nothing surprising in this. If they but knew it, almost all men in their degree, some time or "
    "other, cherish very nearly the same feelings towards the ocean with me.",
    # Carroll, Alice's Adventures in Wonderland
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do. "
    "Once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations "
    "in it, and what is the use of a book, thought Alice, without pictures or conversations? So she was "
    "considering in her own mind, as well as she could, for the hot day made her feel very sleepy and stupid, "
    "whether the pleasure of making a daisy chain would be worth the trouble of getting up and picking the "
    "daisies, when suddenly a white rabbit with pink eyes ran close by her. There was nothing so very remarkable "
    "in that; nor did Alice think it so very much out of the way to hear the rabbit say to itself, oh dear! "
    "Oh dear! I shall be late! Down, down, down. Would the fall never come to an end? I wonder how many miles "
    "I have fallen by this time? she said aloud.",
    # Doyle, A Scandal in Bohemia
    "To Sherlock Holmes she is always the woman. I have seldom heard him mention her under any other name. In his "
    "eyes she eclipses and predominates the whole of her sex. It was not that he felt any emotion akin to love "
    "for Irene Adler. All emotions, and that one particularly, were abhorrent to his cold, precise but admirably "
    "balanced mind. He was, I take it, the most perfect reasoning and observing machine that the world has seen, "
    "but as a lover he would have placed himself in a false position. He never spoke of the softer passions, "
    "save with a gibe and a sneer. They were admirable things for the observer, excellent for drawing the veil "
    "from men's motives and actions.",
    # Lincoln, the Gettysburg Address
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great "
    "civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We "
    "are met on a great battle field of that war. We have come to dedicate a portion of that field, as a final "
    "resting place for those who here gave their lives that that nation might live. It is altogether fitting and "
    "proper that we should do this. But, in a larger sense, we can not dedicate, we can not consecrate, we can "
    "not hallow this ground. The brave men, living and dead, who struggled here, have consecrated it, far above "
    "our poor power to add or detract. The world will little note, nor long remember what we say here, but it "
    "can never forget what they did here.",
    # Bronte, Jane Eyre
    "There was no possibility of taking a walk that day. We had been wandering, indeed, in the leafless "
    "shrubbery an hour in the morning; but since dinner the cold winter wind had brought with it clouds so sombre, "
    "and a rain so penetrating, that further outdoor exercise was now out of the question. I was glad of it: I "
    "never liked long walks, especially on chilly afternoons: dreadful to me was the coming home in the raw "
    "twilight, with nipped fingers and toes, and a heart saddened by the chidings of Bessie, the nurse, and "
    "humbled by the consciousness of my physical inferiority to Eliza, John, and Georgiana Reed.",
    # Austen, Emma
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, seemed to unite "
    "some of the best blessings of existence; and had lived nearly twenty one years in the world with very "
    "little to distress or vex her. She was the youngest of the two daughters of a most affectionate, indulgent "
    "father; and had, in consequence of her sister's marriage, been mistress of his house from a very early "
    "period. Her mother had died too long ago for her to have more than an indistinct remembrance of her "
    "caresses; and her place had been supplied by an excellent woman as governess, who had fallen little short "
    "of a mother in affection.",
    # Wells, The Time Machine
    "The Time Traveller, for so it will be convenient to speak of him, was expounding a recondite matter to us. "
    "His grey eyes shone and twinkled, and his usually pale face was flushed and animated. The fire burned "
    "brightly, and the soft radiance of the incandescent lights in the lilies of silver caught the bubbles that "
    "flashed and passed in our glasses. Our chairs, being his patents, embraced and caressed us rather than "
    "submitted to be sat upon, and there was that luxurious after dinner atmosphere, when thought runs "
    "gracefully free of the trammels of precision.",
    # Twain, The Adventures of Tom Sawyer
    "Tom! No answer. Tom! No answer. What's gone with that boy, I wonder? You Tom! No answer. The old lady "
    "pulled her spectacles down and looked over them about the room; then she put them up and looked out under "
    "them. She seldom or never looked through them for so small a thing as a boy; they were her state pair, the "
    "pride of her heart, and were built for style, not service. She could have seen through a pair of stove "
    "lids just as well. She looked perplexed for a moment, and then said, not fiercely, but still loud enough "
    "for the furniture to hear: Well, I lay if I get hold of you I'll whip you.",
    # Shelley, Frankenstein
    "You will rejoice to hear that no disaster has accompanied the commencement of an enterprise which you have "
    "regarded with such evil forebodings. I arrived here yesterday, and my first task is to assure my dear "
    "sister of my welfare and increasing confidence in the success of my undertaking. I am already far north of "
    "London, and as I walk in the streets of Petersburgh, I feel a cold northern breeze play upon my cheeks, "
    "which braces my nerves and fills me with delight. Do you understand this feeling? This breeze, which has "
    "travelled from the regions towards which I am advancing, gives me a foretaste of those icy climes.",
    # Stevenson, Treasure Island
    "Squire Trelawney, Doctor Livesey, and the rest of these gentlemen having asked me to write down the whole "
    "particulars about Treasure Island, from the beginning to the end, keeping nothing back but the bearings of "
    "the island, and that only because there is still treasure not yet lifted, I take up my pen in the year of "
    "grace, and go back to the time when my father kept the Admiral Benbow inn and the brown old seaman with the "
    "sabre cut first took up his lodging under our roof. I remember him as if it were yesterday, as he came "
    "plodding to the inn door, his sea chest following behind him in a hand barrow; a tall, strong, heavy, nut "
    "brown man, his tarry pigtail falling over the shoulder of his soiled blue coat.",
]
